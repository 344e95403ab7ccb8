//! `kubectl nodeops`: the plugin hack/install-plugin.sh installs (`make plugin`) is the
//! nodeops binary as kubectl-nodeops, so `kubectl nodeops get ...` prints what
//! `nodeops get ...` prints; kubectl completes its words through kubectl_complete-nodeops
//! (subcommands, kinds, the objects in the namespace). Run by the real kubectl of the local
//! control plane, with the plugin on its PATH only. `nodeops logs` is proven on the real
//! node (tests/real_node.rs), where Pods have logs.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kube::Api;
use nodeops::api::AsyncCommand;
use serde_json::json;
use support::{TestNamespace, apply, finished, kubeconfig_path, kubectl_bin, manifest, wait_for};

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
