//! helm for the chart tests: built once by `hack/helm.sh` (cached), run with its caches
//! under `target/helm`; the tests fail, never skip, when it cannot be built.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::OnceLock;

use super::{kubeconfig_path, repo_root};

/// The chart, relative to the repository root.
pub const CHART: &str = "charts/nodeops";

/// helm, built once by `hack/helm.sh` (under a lock, so parallel test binaries build it
/// once); panics with the script's output when it cannot be built.
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let root = repo_root();
        std::fs::create_dir_all(root.join("target")).expect("target/");
        let out = Process::new("flock")
            .arg(root.join("target/.helm.lock"))
            .arg(root.join("hack/helm.sh"))
            .current_dir(&root)
            .output()
            .expect("run hack/helm.sh (needs flock from util-linux)");
        assert!(
            out.status.success(),
            "hack/helm.sh could not build helm, which the chart tests need:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "hack/helm.sh printed {path:?}, not a file");
        path
    })
}

/// What a command printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` from the repository root (helm's caches and config under `target/helm`).
pub fn run(program: &Path, args: &[&str]) -> Run {
    let out = Process::new(program)
        .args(args)
        .current_dir(repo_root())
        // helm's repository cache and config stay out of $HOME.
        .env("HELM_CACHE_HOME", repo_root().join("target/helm/cache"))
        .env("HELM_CONFIG_HOME", repo_root().join("target/helm/config"))
        .env("HELM_DATA_HOME", repo_root().join("target/helm/data"))
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// helm, which must succeed.
pub fn helm(args: &[&str]) -> Run {
    let r = run(helm_bin(), args);
    assert!(r.ok, "helm {}:\n{}{}", args.join(" "), r.stdout, r.stderr);
    r
}

/// A release of the chart that is uninstalled when dropped (also after a panic), before its
/// test namespace goes.
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub installed: bool,
}

impl Release {
    /// `helm uninstall --wait`, which must succeed.
    pub fn uninstall(&mut self) {
        if std::mem::take(&mut self.installed) {
            helm(&[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--kubeconfig",
                &kubeconfig_path().to_string_lossy(),
                "--wait",
                "--timeout",
                "60s",
            ]);
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            self.installed = false;
            let _ = run(
                helm_bin(),
                &[
                    "uninstall",
                    &self.name,
                    "--namespace",
                    &self.namespace,
                    "--kubeconfig",
                    &kubeconfig_path().to_string_lossy(),
                ],
            );
        }
    }
}
