//! Renders the Job that runs one node's share of an operation.

use crate::keys::{
    COMPONENT_LABEL, MANAGED_BY_LABEL, NAME_LABEL, NODE_RUN_COMPONENT, NODE_RUN_NAME,
};
use crate::keys::{
    JOB_ID_ANNOTATION, MANAGED_BY, NODE_ANNOTATION, OWNER_KIND_LABEL, OWNER_NAME_ANNOTATION,
    OWNER_UID_LABEL,
};
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource, PodSpec,
    PodTemplateSpec, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use super::MAIN_CONTAINER;
use crate::api::common::{ExecutionMode, PodSecurity};

/// Where the runner is copied in Container mode.
const RUNNER_DIR: &str = "/nodeops";
/// The emptyDir the runner is copied into.
const RUNNER_VOLUME: &str = "nodeops-runner";
/// The hostPath volume of [`STAGING_DIR`].
const STAGING_VOLUME: &str = "nodeops-staging";
/// Host directory under which installer Jobs stage their image's payload, one
/// subdirectory per node run (its job id), removed when the run ends.
pub const STAGING_DIR: &str = "/var/lib/nodeops/staging";
/// The host process Host-mode runners enter by default (the runner's own default too).
pub const DEFAULT_HOST_PROCESS: &str = "1";
/// The image carrying the runner, unless the operator is started with another.
pub const DEFAULT_RUNNER_IMAGE: &str =
    concat!("nodeops.local/nodeops-exec:v", env!("CARGO_PKG_VERSION"));
/// The image of Container-mode commands that name none, unless the operator is started
/// with another.
pub const DEFAULT_IMAGE: &str = "busybox:1.36";
/// Seconds a node run may spend before its command starts (scheduling, image pull) and
/// after it ends, on top of its timeout, before the Job's deadline fails it.
const DEADLINE_SLACK_SECONDS: i64 = 120;

/// The object a Job runs for.
#[derive(Clone, Debug)]
pub struct Owner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub reference: OwnerReference,
}

/// The user and group a restricted Container-mode run has: nobody, as on most images.
pub const NOBODY: i64 = 65534;

/// What every node of one operation runs.
#[derive(Clone, Debug, Default)]
pub struct RunTemplate {
    pub mode: ExecutionMode,
    /// Image of Container mode (the command runs inside it).
    pub image: String,
    /// Image that carries `nodeops-exec`.
    pub runner_image: String,
    /// Host mode only: an installer image whose `/payload` is staged on the host (under
    /// [`STAGING_DIR`]) before the runner enters it. The container runs this image with
    /// the runner copied in, as Container mode does; the image needs nothing else.
    pub payload_image: Option<String>,
    /// Host mode: the process whose namespaces the runner joins (`--host-process`); empty
    /// or [`DEFAULT_HOST_PROCESS`] leaves the runner's default.
    pub host_process: String,
    /// `imagePullPolicy` of every container (none: the API server's default).
    pub image_pull_policy: Option<String>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub username: Option<String>,
    pub working_directory: Option<String>,
    pub timeout_seconds: i64,
    pub backoff_limit: i32,
    pub pod_annotations: BTreeMap<String, String>,
    /// Container mode's Pod Security level.
    pub pod_security: PodSecurity,
}

fn digest(owner_uid: &str, node: &str) -> String {
    let hash = Sha256::digest(format!("{owner_uid}/{node}").as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The node run's stable id (the seed's 32-hex `job_id`): a hash of the owner's uid and the
/// node, the same for every reconcile of the same object.
pub fn job_id(owner_uid: &str, node: &str) -> String {
    digest(owner_uid, node)[..32].to_string()
}

/// The Job's name: `<owner name, cut>-<10 hex of job id>`, at most 63 characters (the
/// `job-name` label of its pods must fit a label value), deterministic from owner and node
/// so an operator restarted at any moment finds what it created instead of creating it
/// again.
pub fn job_name(owner_name: &str, owner_uid: &str, node: &str) -> String {
    let id = digest(owner_uid, node);
    let mut prefix: String = owner_name.chars().take(63 - 11).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{}", &id[..10])
}

/// `s` as a container argument or environment value that reaches the process unchanged:
/// the kubelet expands `$(NAME)` in both and turns `$$` into `$`, so every `$` is doubled
/// (a script's `$$` or a parameter's `$(id)` would otherwise be rewritten before it ran).
pub fn kubelet_literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// The Job for `node`.
pub fn render(owner: &Owner, node: &str, t: &RunTemplate) -> Job {
    let name = job_name(&owner.name, &owner.uid, node);
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(NAME_LABEL.into(), NODE_RUN_NAME.into());
    labels.insert(COMPONENT_LABEL.into(), NODE_RUN_COMPONENT.into());
    labels.insert(OWNER_UID_LABEL.into(), owner.uid.clone());
    labels.insert(OWNER_KIND_LABEL.into(), owner.kind.to_lowercase());
    let mut annotations = BTreeMap::new();
    annotations.insert(NODE_ANNOTATION.to_string(), node.to_string());
    annotations.insert(OWNER_NAME_ANNOTATION.to_string(), owner.name.clone());
    annotations.insert(JOB_ID_ANNOTATION.to_string(), job_id(&owner.uid, node));
    let mut pod_annotations = t.pod_annotations.clone();
    pod_annotations.extend(annotations.clone());

    let mut runner_args = Vec::new();
    if t.mode == ExecutionMode::Host {
        runner_args.push("--host".to_string());
        // Only when not the default: default Jobs keep their args, and so still run with
        // runner images older than the flag.
        if !t.host_process.is_empty() && t.host_process != DEFAULT_HOST_PROCESS {
            runner_args.extend(["--host-process".into(), t.host_process.clone()]);
        }
    }
    let payload_image = t
        .payload_image
        .as_ref()
        .filter(|_| t.mode == ExecutionMode::Host);
    if payload_image.is_some() {
        runner_args.extend([
            "--stage-payload".into(),
            format!("{STAGING_DIR}/{}", job_id(&owner.uid, node)),
        ]);
    }
    runner_args.extend(["--timeout".to_string(), t.timeout_seconds.to_string()]);
    if let Some(dir) = &t.working_directory {
        runner_args.extend(["--workdir".into(), dir.clone()]);
    }
    if t.mode == ExecutionMode::Host {
        runner_args.extend([
            "--user".into(),
            t.username.clone().unwrap_or_else(|| "root".into()),
        ]);
    }
    runner_args.push("--".into());
    runner_args.extend(t.argv.iter().cloned());
    let runner_args: Vec<String> = runner_args.iter().map(|a| kubelet_literal(a)).collect();
    let env: Vec<EnvVar> = t
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(kubelet_literal(v)),
            ..EnvVar::default()
        })
        .collect();
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let runner_container = |image: &str, command: &str, mounts: Vec<VolumeMount>| Container {
        name: MAIN_CONTAINER.into(),
        image: Some(image.into()),
        command: Some(vec![command.into()]),
        args: Some(runner_args.clone()),
        env: Some(env.clone()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    };
    let privileged = SecurityContext {
        privileged: Some(true),
        ..SecurityContext::default()
    };
    let unprivileged = SecurityContext {
        allow_privilege_escalation: Some(false),
        ..SecurityContext::default()
    };
    // The Pod Security Standards' restricted level, user nobody: what a Container-mode
    // run gets unless it asks for baseline, and what the runner's installer always gets.
    let restricted = SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        run_as_user: Some(NOBODY),
        run_as_group: Some(NOBODY),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    };
    let baseline = SecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..unprivileged.clone()
    };
    let install_runner = Container {
        name: "install-runner".into(),
        image: Some(t.runner_image.clone()),
        command: Some(vec![
            "/nodeops-exec".into(),
            "--install-to".into(),
            format!("{RUNNER_DIR}/nodeops-exec"),
        ]),
        volume_mounts: Some(vec![mount(RUNNER_VOLUME, RUNNER_DIR, false)]),
        security_context: Some(restricted.clone()),
        ..Container::default()
    };
    let runner_volume = Volume {
        name: RUNNER_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let runner_in_image = format!("{RUNNER_DIR}/nodeops-exec");
    let (host, mut containers, mut init_containers, volumes) = match t.mode {
        ExecutionMode::Host => match payload_image {
            None => {
                let mut c = runner_container(&t.runner_image, "/nodeops-exec", vec![]);
                c.security_context = Some(privileged);
                (true, vec![c], vec![], vec![])
            }
            // The installer image with the runner copied in; the staging directory is
            // mounted where it is on the host, so one path names it on both sides.
            Some(image) => {
                let mut c = runner_container(
                    image,
                    &runner_in_image,
                    vec![
                        mount(RUNNER_VOLUME, RUNNER_DIR, true),
                        mount(STAGING_VOLUME, STAGING_DIR, false),
                    ],
                );
                c.security_context = Some(privileged);
                let staging = Volume {
                    name: STAGING_VOLUME.into(),
                    host_path: Some(HostPathVolumeSource {
                        path: STAGING_DIR.into(),
                        type_: Some("DirectoryOrCreate".into()),
                    }),
                    ..Volume::default()
                };
                (
                    true,
                    vec![c],
                    vec![install_runner],
                    vec![runner_volume, staging],
                )
            }
        },
        ExecutionMode::Container => {
            let mut c = runner_container(
                &t.image,
                &runner_in_image,
                vec![mount(RUNNER_VOLUME, RUNNER_DIR, true)],
            );
            c.security_context = Some(match t.pod_security {
                PodSecurity::Restricted => restricted,
                PodSecurity::Baseline => baseline,
            });
            (false, vec![c], vec![install_runner], vec![runner_volume])
        }
    };
    if let Some(policy) = &t.image_pull_policy {
        for c in containers.iter_mut().chain(init_containers.iter_mut()) {
            c.image_pull_policy = Some(policy.clone());
        }
    }
    let pod_spec = PodSpec {
        node_name: Some(node.into()),
        restart_policy: Some("Never".into()),
        tolerations: Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(10),
        containers,
        init_containers: Some(init_containers),
        volumes: Some(volumes),
        host_pid: host.then_some(true),
        host_network: host.then_some(true),
        host_ipc: host.then_some(true),
        ..PodSpec::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner.reference.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(t.backoff_limit),
            active_deadline_seconds: Some(
                (t.timeout_seconds + DEADLINE_SLACK_SECONDS) * i64::from(t.backoff_limit + 1),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            kind: "AsyncCommand".into(),
            namespace: "ops".into(),
            name: "list-system".into(),
            uid: "6837531f-d3f5-4550-927b-930180a706bf".into(),
            reference: OwnerReference {
                api_version: "nodeops.io/v1alpha1".into(),
                kind: "AsyncCommand".into(),
                name: "list-system".into(),
                uid: "6837531f-d3f5-4550-927b-930180a706bf".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn template(mode: ExecutionMode) -> RunTemplate {
        RunTemplate {
            mode,
            image: "busybox:1.36".into(),
            runner_image: "ghcr.io/nodeops/nodeops-exec:v0.1.0".into(),
            argv: vec!["ls".into(), "-l".into(), "/system".into()],
            timeout_seconds: 60,
            ..Default::default()
        }
    }

    /// A Container-mode run meets the Pod Security Standards' restricted level unless it
    /// asks for baseline; its runner installer always does.
    #[test]
    fn container_mode_is_restricted_unless_baseline_is_asked_for() {
        let pod_of = |t: &RunTemplate| {
            render(&owner(), "node-0001", t)
                .spec
                .expect("spec")
                .template
                .spec
                .expect("pod")
        };
        let restricted = |c: &Container| {
            let s = c.security_context.clone().expect("security context");
            s.allow_privilege_escalation == Some(false)
                && s.run_as_non_root == Some(true)
                && s.run_as_user == Some(NOBODY)
                && s.privileged.is_none()
                && s.capabilities.and_then(|c| c.drop) == Some(vec!["ALL".to_string()])
                && s.seccomp_profile.map(|p| p.type_) == Some("RuntimeDefault".into())
        };
        let mut t = template(ExecutionMode::Container);
        let pod = pod_of(&t);
        assert!(restricted(&pod.containers[0]), "{:?}", pod.containers[0]);
        let init = pod.init_containers.clone().expect("init");
        assert!(restricted(&init[0]), "{:?}", init[0]);
        assert!(pod.host_pid.is_none() && pod.host_network.is_none());
        assert!(pod.volumes.iter().flatten().all(|v| v.host_path.is_none()));

        t.pod_security = PodSecurity::Baseline;
        let pod = pod_of(&t);
        let s = pod.containers[0].security_context.clone().expect("context");
        assert_eq!(
            (s.run_as_non_root, s.run_as_user, s.capabilities),
            (None, None, None)
        );
        assert_eq!(s.allow_privilege_escalation, Some(false));
        assert!(restricted(&pod.init_containers.expect("init")[0]));
    }

    /// Nothing reaches a node's run that its creator did not send: no service account
    /// token (the operator's or the namespace's), no Secret, no projected or downward API
    /// data, no environment from anything but the run's own values.
    #[test]
    fn a_run_carries_no_credentials_and_no_secret() {
        let mut t = template(ExecutionMode::Container);
        t.env = vec![("NODEOPS_PARAM_path".into(), "/var".into())];
        for mode in [ExecutionMode::Container, ExecutionMode::Host] {
            t.mode = mode;
            let job = render(&owner(), "node-0001", &t);
            let pod = job.spec.expect("spec").template.spec.expect("pod");
            assert_eq!(pod.automount_service_account_token, Some(false), "{mode:?}");
            assert_eq!(pod.service_account_name, None, "{mode:?}");
            assert!(pod.image_pull_secrets.is_none(), "{mode:?}");
            for v in pod.volumes.iter().flatten() {
                assert!(
                    v.secret.is_none() && v.projected.is_none() && v.downward_api.is_none(),
                    "{mode:?}: volume {} carries data",
                    v.name
                );
            }
            for c in pod
                .containers
                .iter()
                .chain(pod.init_containers.iter().flatten())
            {
                assert!(c.env_from.is_none(), "{mode:?}: {} env from", c.name);
                for e in c.env.iter().flatten() {
                    assert!(
                        e.value_from.is_none(),
                        "{mode:?}: {} from {:?}",
                        e.name,
                        e.value_from
                    );
                }
            }
        }
    }

    #[test]
    fn names_are_deterministic_short_and_distinct() {
        let a = job_name("list-system", "uid-1", "node-0001");
        assert_eq!(a, job_name("list-system", "uid-1", "node-0001"));
        assert_ne!(a, job_name("list-system", "uid-1", "node-0002"));
        assert_ne!(
            a,
            job_name("list-system", "uid-2", "node-0001"),
            "a re-created owner gets new Jobs"
        );
        let long = job_name(&"x".repeat(253), "uid", &"n".repeat(253));
        assert!(long.len() <= 63, "{}", long.len());
        let dashed = job_name(&format!("{}-abc", "a".repeat(51)), "uid", "n");
        assert!(!dashed.contains("--"), "{dashed}");
        assert_eq!(job_id("uid", "n").len(), 32);
    }

    #[test]
    fn container_mode_runs_the_argv_through_the_runner_in_the_image() {
        let job = render(&owner(), "node-0001", &template(ExecutionMode::Container));
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(180));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.node_name.as_deref(), Some("node-0001"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.tolerations.expect("tolerations")[0].operator.as_deref(),
            Some("Exists")
        );
        assert_eq!(pod.host_pid, None);
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("busybox:1.36"));
        assert_eq!(
            main.command.as_deref(),
            Some(&["/nodeops/nodeops-exec".to_string()][..])
        );
        assert_eq!(
            main.args.as_deref().expect("args"),
            ["--timeout", "60", "--", "ls", "-l", "/system"]
        );
        assert!(
            main.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .is_none()
        );
        let meta = job.metadata;
        assert_eq!(
            meta.owner_references.expect("owner")[0].controller,
            Some(true)
        );
        let labels = meta.labels.expect("labels");
        assert_eq!(
            labels[OWNER_UID_LABEL],
            "6837531f-d3f5-4550-927b-930180a706bf"
        );
        assert_eq!(labels["app.kubernetes.io/managed-by"], "nodeops");
        assert_eq!(
            meta.annotations.expect("annotations")[NODE_ANNOTATION],
            "node-0001"
        );
    }

    #[test]
    fn host_mode_is_privileged_and_enters_the_host_as_the_user() {
        let mut t = template(ExecutionMode::Host);
        t.username = Some("backup".into());
        t.backoff_limit = 2;
        let job = render(&owner(), "node-0002", &t);
        let spec = job.spec.expect("spec");
        assert_eq!(spec.active_deadline_seconds, Some(540));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.host_pid, Some(true));
        assert!(pod.init_containers.unwrap_or_default().is_empty());
        let main = &pod.containers[0];
        assert_eq!(
            main.image.as_deref(),
            Some("ghcr.io/nodeops/nodeops-exec:v0.1.0")
        );
        assert_eq!(
            main.security_context.as_ref().and_then(|s| s.privileged),
            Some(true)
        );
        assert_eq!(
            main.args.as_deref().expect("args"),
            [
                "--host",
                "--timeout",
                "60",
                "--user",
                "backup",
                "--",
                "ls",
                "-l",
                "/system"
            ]
        );
    }

    #[test]
    fn host_mode_names_a_host_process_other_than_pid_1() {
        let mut t = template(ExecutionMode::Host);
        t.host_process = "kubelet".into();
        let args = |t: &RunTemplate| {
            let job = render(&owner(), "node-0002", t);
            let pod = job.spec.expect("spec").template.spec.expect("pod spec");
            pod.containers[0].args.clone().expect("args")
        };
        assert_eq!(
            args(&t),
            [
                "--host",
                "--host-process",
                "kubelet",
                "--timeout",
                "60",
                "--user",
                "root",
                "--",
                "ls",
                "-l",
                "/system"
            ]
        );
        t.host_process = DEFAULT_HOST_PROCESS.into();
        assert!(!args(&t).iter().any(|a| a == "--host-process"));
        // Container mode never enters the host.
        let mut c = template(ExecutionMode::Container);
        c.host_process = "kubelet".into();
        assert!(!args(&c).iter().any(|a| a == "--host-process"));
    }

    #[test]
    fn an_installer_image_is_staged_by_the_runner_copied_into_it() {
        let mut t = template(ExecutionMode::Host);
        t.payload_image = Some("example/installer:2".into());
        t.host_process = "kubelet".into();
        let job = render(&owner(), "node-0004", &t);
        let pod = job.spec.expect("spec").template.spec.expect("pod spec");
        assert_eq!(pod.host_pid, Some(true));
        let init = &pod.init_containers.expect("init")[0];
        assert_eq!(
            init.image.as_deref(),
            Some("ghcr.io/nodeops/nodeops-exec:v0.1.0")
        );
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("example/installer:2"));
        assert_eq!(
            main.command.as_deref(),
            Some(&["/nodeops/nodeops-exec".to_string()][..])
        );
        let stage = format!("{STAGING_DIR}/{}", job_id(&owner().uid, "node-0004"));
        let args = main.args.clone().expect("args");
        assert_eq!(
            args[..6],
            [
                "--host",
                "--host-process",
                "kubelet",
                "--stage-payload",
                stage.as_str(),
                "--timeout"
            ]
        );
        assert_eq!(
            main.security_context.as_ref().and_then(|s| s.privileged),
            Some(true)
        );
        let mounts = main.volume_mounts.clone().expect("mounts");
        assert_eq!(mounts[1].mount_path, STAGING_DIR);
        let volumes = pod.volumes.expect("volumes");
        let host_path = volumes[1].host_path.as_ref().expect("hostPath");
        assert_eq!(host_path.path, STAGING_DIR);
        // Container mode ignores it: nothing is staged where nothing enters the host.
        let mut c = template(ExecutionMode::Container);
        c.payload_image = Some("example/installer:2".into());
        let job = render(&owner(), "node-0004", &c);
        let main = job
            .spec
            .expect("spec")
            .template
            .spec
            .expect("spec")
            .containers[0]
            .clone();
        assert_eq!(main.image.as_deref(), Some("busybox:1.36"));
        assert!(
            !main
                .args
                .expect("args")
                .iter()
                .any(|a| a == "--stage-payload")
        );
    }

    #[test]
    fn pod_annotations_and_parameters_reach_the_pod() {
        let mut t = template(ExecutionMode::Container);
        t.pod_annotations
            .insert("sim.nodeops.io/outcome".into(), "fail".into());
        t.env = vec![("NODEOPS_PARAM_path".into(), "/var".into())];
        let job = render(&owner(), "node-0003", &t);
        let tpl = job.spec.expect("spec").template;
        assert_eq!(
            tpl.metadata.expect("meta").annotations.expect("ann")["sim.nodeops.io/outcome"],
            "fail"
        );
        let env = tpl.spec.expect("spec").containers[0]
            .env
            .clone()
            .expect("env");
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("NODEOPS_PARAM_path", Some("/var"))
        );
    }

    #[test]
    fn dollars_reach_the_runner_unexpanded_by_the_kubelet() {
        // The kubelet turns `$$` into `$` and `$(NAME)` into NAME's value in args and env.
        for mode in [ExecutionMode::Container, ExecutionMode::Host] {
            let mut t = template(mode);
            t.argv = vec!["sh".into(), "-c".into(), "kill -9 $$; echo $(HOME)".into()];
            t.env = vec![("NODEOPS_PARAM_v".into(), "$(id) $$".into())];
            let job = render(&owner(), "n", &t);
            let main = job
                .spec
                .expect("spec")
                .template
                .spec
                .expect("spec")
                .containers[0]
                .clone();
            let args = main.args.expect("args");
            assert_eq!(
                args.last().map(String::as_str),
                Some("kill -9 $$$$; echo $$(HOME)")
            );
            assert_eq!(
                main.env.expect("env")[0].value.as_deref(),
                Some("$$(id) $$$$")
            );
        }
    }
}
