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
    HELM.get_or_init(|| super::built_by("helm.sh"))
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
    /// `helm install NAME charts/nodeops --namespace NAMESPACE` on the local control plane,
    /// with `extra` arguments, which must succeed; what it printed. The release counts as
    /// installed before helm runs, so a half-done install is uninstalled too.
    pub fn install(name: &str, namespace: &str, extra: &[&str]) -> (Self, Run) {
        let release = Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            installed: true,
        };
        let kubeconfig = kubeconfig_path().to_string_lossy();
        let mut args = vec![
            "install",
            name,
            CHART,
            "--namespace",
            namespace,
            "--kubeconfig",
            &kubeconfig,
        ];
        args.extend_from_slice(extra);
        let out = helm(&args);
        (release, out)
    }

    /// `helm uninstall` of this release, with `extra` arguments.
    fn uninstall_with(&self, extra: &[&str]) -> Run {
        let kubeconfig = kubeconfig_path().to_string_lossy();
        let mut args = vec![
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--kubeconfig",
            &kubeconfig,
        ];
        args.extend_from_slice(extra);
        run(helm_bin(), &args)
    }

    /// `helm uninstall --wait`, which must succeed.
    pub fn uninstall(&mut self) {
        if std::mem::take(&mut self.installed) {
            let r = self.uninstall_with(&["--wait", "--timeout", "60s"]);
            assert!(
                r.ok,
                "helm uninstall {}:\n{}{}",
                self.name, r.stdout, r.stderr
            );
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if std::mem::take(&mut self.installed) {
            let _ = self.uninstall_with(&[]);
        }
    }
}
