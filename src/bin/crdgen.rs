//! Writes the CRD manifests generated from the Rust types: `crdgen [DIR]` writes one file
//! per kind into DIR (default `crds/`), replacing what is there; `crdgen -` prints them all
//! as one multi-document stream; `crdgen --error-codes` prints the AgentInvocation error-code
//! table of docs/error-codes.md.

use std::io::Write;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let target = std::env::args().nth(1).unwrap_or_else(|| "crds".into());
    if target == "--error-codes" {
        print!("{}", nodeops::controller::agent_invocation::codes::table());
        return Ok(());
    }
    let files = nodeops::api::manifests::all()?;
    if target == "-" {
        let mut out = std::io::stdout().lock();
        for (_, yaml) in &files {
            writeln!(out, "---\n{yaml}")?;
        }
        return Ok(());
    }
    let dir = PathBuf::from(target);
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::remove_file(path)?;
        }
    }
    for (name, yaml) in &files {
        std::fs::write(dir.join(name), yaml)?;
    }
    eprintln!("wrote {} CRDs to {}", files.len(), dir.display());
    Ok(())
}
