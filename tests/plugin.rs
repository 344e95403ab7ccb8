//! `kubectl nodeops`: the plugin hack/install-plugin.sh installs (`make plugin`) is the
//! nodeops binary as kubectl-nodeops, so `kubectl nodeops get ...` prints what
//! `nodeops get ...` prints; kubectl completes its words through kubectl_complete-nodeops
//! (subcommands, kinds, the objects in the namespace). Run by the real kubectl of the local
//! control plane, with the plugin on its PATH only. `nodeops logs` is proven on the real
//! node (tests/real_node.rs), where Pods have logs.
//!
//! krew: `krew install` of the manifest template plugins/krew/nodeops.yaml, rendered by
//! hack/krew-package.sh for the archive it packs, with krew v0.4.3 (hack/krew.sh).

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use kube::Api;
use nodeops::api::AsyncCommand;
use serde_json::json;
use support::{
    TestNamespace, apply, finished, kubeconfig_path, kubectl_bin, manifest, repo_root, wait_for,
};

/// Runs kubectl with `plugins` first on its PATH.
fn kubectl_with(plugins: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(kubectl_bin())
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("run kubectl")
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn kubectl_nodeops_gets_and_completes_like_nodeops() {
    let (ns, _op) = TestNamespace::with_operator("plugin").await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "disk-check",
            json!({"command": "df -h", "nodeNames": ["node-0001", "node-0002"]}),
        ),
    )
    .await;
    wait_for(
        &api,
        "disk-check",
        Duration::from_secs(60),
        "completion",
        finished,
    )
    .await;

    let plugins = std::env::temp_dir().join(format!("nodeops-plugin-{}", ns.name));
    let installed = std::process::Command::new(support::repo_root().join("hack/install-plugin.sh"))
        .arg(&plugins)
        .arg(env!("CARGO_BIN_EXE_nodeops"))
        .output()
        .expect("hack/install-plugin.sh");
    text(&installed);

    let direct = std::process::Command::new(env!("CARGO_BIN_EXE_nodeops"))
        .args(["get", "asynccommand", "disk-check", "-n", &ns.name])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("nodeops get");
    let via_kubectl = kubectl_with(
        &plugins,
        &[
            "nodeops",
            "get",
            "asynccommand",
            "disk-check",
            "-n",
            &ns.name,
        ],
    );
    let table = text(&via_kubectl);
    assert_eq!(table, text(&direct), "the same table through kubectl");
    assert!(
        table.contains("node-0001") && table.contains("node-0002"),
        "{table}"
    );

    // kubectl's completion of a plugin's words goes to kubectl_complete-nodeops.
    let words = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["__complete", "nodeops"];
        all.extend_from_slice(args);
        text(&kubectl_with(&plugins, &all))
            .lines()
            .filter(|l| !l.starts_with(':') && !l.starts_with("Completion ended"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(words(&[""]), ["get", "logs"]);
    assert_eq!(
        words(&["logs", "a"]),
        ["asynccommand", "acmd", "agentinvocation", "ainv"]
    );
    assert_eq!(
        words(&["get", "acmd", "-n", &ns.name, ""]),
        ["disk-check"],
        "the objects of the namespace"
    );
    assert_eq!(
        words(&[
            "logs",
            "acmd",
            "disk-check",
            "-n",
            &ns.name,
            "--node",
            "node-000"
        ]),
        ["node-0001", "node-0002"],
        "the object's nodes"
    );
    let _ = std::fs::remove_dir_all(&plugins);
}

/// Runs a program with `path` as its whole PATH: what it finds there is what it runs.
fn run_with_path(program: &Path, path: &Path, args: &[&str]) -> Output {
    std::process::Command::new(program)
        .args(args)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// The `files` and `bin` of a platform of the manifest, and its uri.
fn platform_of(platform: &serde_yaml::Value) -> (String, String, String, Vec<String>) {
    let label = |key: &str| {
        platform["selector"]["matchLabels"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let files = platform["files"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no files in the platform {platform:?}"))
        .iter()
        .map(|f| {
            assert_eq!(f["to"].as_str(), Some("."), "{f:?}");
            f["from"].as_str().expect("from").to_string()
        })
        .collect();
    assert_eq!(platform["bin"].as_str(), Some("kubectl-nodeops"));
    let uri = platform["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no uri in the platform {platform:?}"))
        .to_string();
    (label("os"), label("arch"), uri, files)
}

#[test]
fn krew_installs_the_manifest_with_the_packed_archive() {
    let krew = support::built_by("krew.sh");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let dir = std::env::temp_dir().join(format!("nodeops-krew-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // The archive and the manifest rendered for it, as `make krew` makes them.
    let packed = std::process::Command::new(repo_root().join("hack/krew-package.sh"))
        .arg(&version)
        .arg(dir.join("out"))
        .arg(env!("CARGO_BIN_EXE_nodeops"))
        .current_dir(repo_root())
        .output()
        .expect("hack/krew-package.sh");
    let printed = text(&packed);
    let [archive, rendered] = printed.lines().collect::<Vec<_>>()[..] else {
        panic!("hack/krew-package.sh printed {printed:?}, not the archive and the manifest")
    };
    let (archive, rendered) = (Path::new(archive), Path::new(rendered));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let platform = format!("{}_{arch}", std::env::consts::OS);
    assert_eq!(
        archive.file_name().and_then(|n| n.to_str()),
        Some(format!("nodeops_{version}_{platform}.tar.gz").as_str())
    );

    // What the archive holds is what every platform of the manifest copies: the plugin, its
    // completion script and the repository's LICENSE when it has one.
    let listed = text(
        &std::process::Command::new("tar")
            .arg("-tzf")
            .arg(archive)
            .output()
            .expect("tar"),
    );
    let mut packed_files: Vec<&str> = listed.lines().collect();
    packed_files.sort_unstable();
    let mut expected = vec!["kubectl-nodeops", "kubectl_complete-nodeops"];
    if repo_root().join("LICENSE").exists() {
        expected.push("LICENSE");
        expected.sort_unstable();
    }
    assert_eq!(packed_files, expected, "the archive's files");

    // The rendered template: every action replaced, all four platforms, each one's archive
    // at the homepage's releases. krew validates the rest when it installs it.
    let manifest_text = std::fs::read_to_string(rendered).expect("the rendered manifest");
    assert!(!manifest_text.contains("{{"), "{manifest_text}");
    let manifest: serde_yaml::Value = serde_yaml::from_str(&manifest_text).expect("YAML");
    let spec = &manifest["spec"];
    assert_eq!(spec["version"].as_str(), Some(version.as_str()));
    let homepage = spec["homepage"].as_str().expect("homepage");
    assert!(homepage.starts_with("https://"), "{homepage}");
    let mut platforms: Vec<String> = Vec::new();
    for p in spec["platforms"].as_sequence().expect("platforms") {
        let (os, arch, uri, mut files) = platform_of(p);
        assert_eq!(
            uri,
            format!("{homepage}/releases/download/{version}/nodeops_{version}_{os}_{arch}.tar.gz")
        );
        files.sort_unstable();
        assert_eq!(files, expected, "the files of {os}/{arch}");
        platforms.push(format!("{os}_{arch}"));
    }
    platforms.sort_unstable();
    assert_eq!(
        platforms,
        ["darwin_amd64", "darwin_arm64", "linux_amd64", "linux_arm64"]
    );
    assert!(platforms.contains(&platform), "no platform {platform}");

    // krew with its own root and nothing but its bin directory on PATH: no git, no index,
    // no network for a --manifest install; it checks the archive against the sha256.
    let root = dir.join("krew");
    let bin = root.join("bin");
    let krew_run = |args: &[&str]| -> Output {
        std::process::Command::new(&krew)
            .args(args)
            .env("KREW_ROOT", &root)
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("PATH", &bin)
            .stdin(Stdio::null())
            .output()
            .expect("run krew")
    };
    let manifest_arg = format!("--manifest={}", rendered.display());
    let archive_arg = format!("--archive={}", archive.display());
    let installed = krew_run(&["install", &manifest_arg, &archive_arg]);
    let said = String::from_utf8_lossy(&installed.stderr).into_owned();
    text(&installed);
    assert!(said.contains("Installed plugin: nodeops"), "{said}");
    assert!(bin.join("kubectl-nodeops").is_file(), "{said}");

    // kubectl runs the plugin krew linked (clap names it by the name it was run as): the
    // help of nodeops itself.
    let help = text(&run_with_path(kubectl_bin(), &bin, &["nodeops", "--help"]));
    let direct = text(&run_with_path(
        Path::new(env!("CARGO_BIN_EXE_nodeops")),
        &bin,
        &["--help"],
    ));
    assert_eq!(
        help,
        direct.replacen("Usage: nodeops ", "Usage: kubectl-nodeops ", 1)
    );

    // Completion, set up as the caveats krew printed say.
    let link = spec["caveats"]
        .as_str()
        .expect("the manifest's caveats")
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ln "))
        .expect("the caveats' ln command");
    assert!(said.contains(link), "krew printed the caveats:\n{said}");
    let linked = std::process::Command::new("sh")
        .args(["-c", link])
        .env("KREW_ROOT", &root)
        .output()
        .expect("sh");
    text(&linked);
    let words = text(&run_with_path(
        kubectl_bin(),
        &bin,
        &["__complete", "nodeops", ""],
    ));
    let words: Vec<&str> = words
        .lines()
        .filter(|l| !l.starts_with(':') && !l.starts_with("Completion ended"))
        .collect();
    assert_eq!(words, ["get", "logs"]);

    // krew's uninstall (unlike install --manifest) refuses to run before the plugin index
    // is set up (`kubectl krew update` clones it; krew only looks for index/*/.git): an
    // empty git repository stands for it. krew itself still runs no git.
    let index = root.join("index/default");
    let init = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(&index)
        .output()
        .expect("git init");
    text(&init);
    text(&krew_run(&["uninstall", "nodeops"]));
    assert!(
        std::fs::symlink_metadata(bin.join("kubectl-nodeops")).is_err(),
        "kubectl-nodeops left in {}",
        bin.display()
    );
    assert!(!root.join("store/nodeops").exists());
    assert!(!root.join("receipts/nodeops.yaml").exists());
    let gone = run_with_path(kubectl_bin(), &bin, &["nodeops", "--help"]);
    assert!(
        !gone.status.success(),
        "kubectl still runs the uninstalled plugin"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
