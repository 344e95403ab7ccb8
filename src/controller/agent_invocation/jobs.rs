//! The Jobs of agent invocations: the HostInstaller's installer on a node (through the
//! per-node engine, in Host mode) and the remote installer that reaches a host outside the
//! cluster over SSH from the remote install host node.

use crate::keys::{
    COMPONENT_LABEL, INVOCATION_ID_ANNOTATION, JOB_ID_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL,
    NAME_LABEL, NODE_ANNOTATION, NODE_RUN_NAME, OWNER_KIND_LABEL, OWNER_NAME_ANNOTATION,
    OWNER_NAMESPACE_ANNOTATION, OWNER_UID_LABEL, REMOTE_INSTALL_COMPONENT,
};
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSpec, PodTemplateSpec, SecretVolumeSource, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::agent_invocation::{
    AgentInvocation, InstanceAction, InvocationResult, RemoteInstallHost,
};
use crate::api::command::Command;
use crate::api::common::ExecutionMode;
use crate::api::node_agent::NodeAgent;
use crate::engine::MAIN_CONTAINER;
use crate::engine::job::{Owner, RunTemplate, kubelet_literal, render};
use crate::engine::script::{self, PARAM_ENV_PREFIX};

/// Label selector of every Job of every AgentInvocation.
pub fn child_selector() -> String {
    crate::keys::owner_kind_selector("agentinvocation")
}
/// Where the remote-install pod mounts the credentials Secret.
pub const CREDENTIALS_DIR: &str = "/etc/nodeops/ssh";
/// The volume of the credentials Secret.
const CREDENTIALS_VOLUME: &str = "credentials";

/// Seconds on top of the remote timeout before the Job's deadline fails it.
const DEADLINE_SLACK_SECONDS: i64 = 120;

/// The parameters an installer receives.
fn params(e: &InvocationResult) -> BTreeMap<String, String> {
    let action = match e.action {
        Some(InstanceAction::Update) => "update",
        Some(InstanceAction::Rollback) => "rollback",
        _ => "install",
    };
    BTreeMap::from([
        ("action".to_string(), action.to_string()),
        (
            "version".to_string(),
            e.target_version.clone().unwrap_or_default(),
        ),
        (
            "previousVersion".to_string(),
            e.version_before.clone().unwrap_or_default(),
        ),
    ])
}

/// The argv and environment that run `command` for instance `e`: the parameters are always
/// in the environment (`NODEOPS_PARAM_action`, `_version`, `_previousVersion`), and also
/// substituted where the script names them as `{{version}}` (when parameters are enabled).
pub fn installer_argv(command: &Command, e: &InvocationResult) -> Result<script::Rendered, String> {
    let c = &command.spec;
    let all = params(e);
    let named = if c.enable_parameters {
        script::placeholders(&c.content).map_err(|err| err.to_string())?
    } else {
        Default::default()
    };
    let given: BTreeMap<String, String> = all
        .iter()
        .filter(|(k, _)| named.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let defaults = c.default_parameters.clone().unwrap_or_default();
    let (argv, mut env) = script::render(
        c.interpreter,
        &c.content,
        c.enable_parameters,
        &defaults,
        &given,
    )
    .map_err(|err| err.to_string())?;
    for (k, v) in all {
        let name = format!("{PARAM_ENV_PREFIX}{k}");
        if !env.iter().any(|(n, _)| *n == name) {
            env.push((name, v));
        }
    }
    Ok((argv, env))
}

fn agent_owner(agent: &NodeAgent) -> OwnerReference {
    OwnerReference {
        api_version: NodeAgent::api_version(&()).into(),
        kind: NodeAgent::kind(&()).into(),
        name: agent.metadata.name.clone().unwrap_or_default(),
        uid: agent.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

fn annotate(job: &mut Job, obj: &AgentInvocation, e: &InvocationResult) {
    let extra = [
        (INVOCATION_ID_ANNOTATION, e.invocation_id.clone()),
        (
            OWNER_NAMESPACE_ANNOTATION,
            obj.metadata.namespace.clone().unwrap_or_default(),
        ),
    ];
    let metas = [
        Some(&mut job.metadata),
        job.spec.as_mut().and_then(|s| s.template.metadata.as_mut()),
    ];
    for meta in metas.into_iter().flatten() {
        let a = meta.annotations.get_or_insert_with(Default::default);
        for (k, v) in &extra {
            a.insert(k.to_string(), v.clone());
        }
    }
}

/// How the operator runs its runner: image, host process, pull policy.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    pub image: String,
    pub host_process: String,
    pub image_pull_policy: Option<String>,
}

/// The HostInstaller Job of node instance `e`: the installer image with the runner copied
/// in; the runner stages the image's `/payload` on the host, enters the host (the
/// namespaces of `runner.host_process`) and runs the installer Command's script there
/// (docs/installers.md). It lives in the agent's namespace, owned by the NodeAgent (an
/// owner in another namespace than the invocation's is not allowed; the invocation
/// deletes the Job once it recorded the result).
pub fn installer_job(
    obj: &AgentInvocation,
    agent: &NodeAgent,
    command: &Command,
    e: &InvocationResult,
    runner: &Runner,
) -> Result<Job, String> {
    let installer = agent
        .spec
        .installer
        .as_ref()
        .ok_or("the NodeAgent has no spec.installer")?;
    let (argv, env) = installer_argv(command, e)?;
    let owner = Owner {
        kind: "AgentInvocation".into(),
        namespace: agent.spec.namespace.clone(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        reference: agent_owner(agent),
    };
    let template = RunTemplate {
        mode: ExecutionMode::Host,
        runner_image: runner.image.clone(),
        payload_image: Some(installer.image.clone()),
        host_process: runner.host_process.clone(),
        image_pull_policy: runner.image_pull_policy.clone(),
        argv,
        env,
        username: command.spec.username.clone(),
        working_directory: command.spec.working_directory.clone(),
        timeout_seconds: agent.spec.ready_timeout_seconds,
        backoff_limit: 0,
        pod_annotations: agent.spec.pod_annotations.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut job = render(&owner, &e.instance_id, &template);
    annotate(&mut job, obj, e);
    Ok(job)
}

/// The Secret key holding the credential `host` logs in with.
pub fn credential_key(host: &RemoteInstallHost) -> String {
    host.credentials_secret_ref.key.clone().unwrap_or_else(|| {
        if host.use_pem {
            "ssh-privatekey".into()
        } else {
            "password".into()
        }
    })
}

/// The remote-install Job of instance `e`: on the remote install host node, the runner
/// logs in to `host` over SSH with the mounted Secret and runs the remote installer's
/// script with `sh -s`. It lives in the invocation's namespace (where the Secret is), owned
/// by the invocation. Not privileged: it only opens a connection.
pub fn remote_job(
    obj: &AgentInvocation,
    agent: &NodeAgent,
    command: &Command,
    host_node: &str,
    host: &RemoteInstallHost,
    e: &InvocationResult,
    runner_image: &str,
) -> Result<Job, String> {
    let remote = agent
        .spec
        .remote_installer
        .as_ref()
        .ok_or("the NodeAgent has no spec.remoteInstaller")?;
    let c = &command.spec;
    let script = if c.enable_parameters {
        script::substitute(crate::api::command::Interpreter::Shell, &c.content)
    } else {
        c.content.clone()
    };
    let name = super::plan::job_name(obj, e);
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> = [
        (MANAGED_BY_LABEL, MANAGED_BY),
        (NAME_LABEL, NODE_RUN_NAME),
        (COMPONENT_LABEL, REMOTE_INSTALL_COMPONENT),
        (OWNER_UID_LABEL, uid.as_str()),
        (OWNER_KIND_LABEL, "agentinvocation"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: BTreeMap<String, String> = [
        (NODE_ANNOTATION, host_node.to_string()),
        (
            OWNER_NAME_ANNOTATION,
            obj.metadata.name.clone().unwrap_or_default(),
        ),
        (OWNER_NAMESPACE_ANNOTATION, ns),
        (INVOCATION_ID_ANNOTATION, e.invocation_id.clone()),
        (
            JOB_ID_ANNOTATION,
            crate::engine::job::job_id(&uid, &e.invocation_id),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut pod_annotations = agent.spec.pod_annotations.clone().unwrap_or_default();
    pod_annotations.extend(annotations.clone());
    let key = credential_key(host);
    let mut args = vec![
        "--timeout".to_string(),
        remote.timeout_seconds.to_string(),
        "--ssh-host".into(),
        host.remote_ip.clone(),
        "--ssh-port".into(),
        host.port.to_string(),
        "--ssh-user".into(),
        host.user_name.clone(),
    ];
    args.push(if host.use_pem {
        "--ssh-key-file".into()
    } else {
        "--ssh-password-file".into()
    });
    args.push(format!("{CREDENTIALS_DIR}/{key}"));
    args.extend([
        "--ssh-known-hosts-file".into(),
        format!("{CREDENTIALS_DIR}/known_hosts"),
    ]);
    if host.insecure_accept_unknown_host_key {
        args.push("--ssh-accept-unknown-host-key".into());
    }
    let p = params(e);
    let env = |name: String, value: String| EnvVar {
        name,
        value: Some(value),
        ..EnvVar::default()
    };
    let env = vec![
        env("NODEOPS_SCRIPT".into(), kubelet_literal(&script)),
        env(format!("{PARAM_ENV_PREFIX}action"), "install".into()),
        env(
            format!("{PARAM_ENV_PREFIX}version"),
            kubelet_literal(&p["version"]),
        ),
    ];
    let owner = OwnerReference {
        api_version: AgentInvocation::api_version(&()).into(),
        kind: AgentInvocation::kind(&()).into(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let container = Container {
        name: MAIN_CONTAINER.into(),
        image: Some(runner_image.into()),
        command: Some(vec!["/nodeops-exec".into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(vec![VolumeMount {
            name: CREDENTIALS_VOLUME.into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: obj.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(remote.timeout_seconds + DEADLINE_SLACK_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    node_name: Some(host_node.into()),
                    restart_policy: Some("Never".into()),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(10),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: CREDENTIALS_VOLUME.into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(host.credentials_secret_ref.name.clone()),
                            default_mode: Some(0o400),
                            ..SecretVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invocation() -> AgentInvocation {
        serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1",
            "kind": "AgentInvocation",
            "metadata": {"name": "remote", "namespace": "ops", "uid": "inv-uid"},
            "spec": {"invocationType": "RemoteInstall", "remoteInstallMeta": [{
                "remoteIp": "10.0.0.5", "userName": "root", "usePem": true,
                "credentialsSecretRef": {"name": "ssh-creds"},
            }]},
        }))
        .expect("invocation")
    }

    fn agent() -> NodeAgent {
        serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1",
            "kind": "NodeAgent",
            "metadata": {"name": "telescope", "uid": "agent-uid"},
            "spec": {
                "namespace": "nodeops-agents", "mode": "HostInstaller",
                "image": "example/telescope", "basicVersion": "3.2.1",
                "installer": {"image": "example/installer:1", "commandRef": "install-telescope"},
                "remoteInstaller": {"commandRef": "remote-telescope"},
            },
        }))
        .expect("agent")
    }

    fn command(content: &str, params: bool) -> Command {
        serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1",
            "kind": "Command",
            "metadata": {"name": "install-telescope", "namespace": "nodeops-agents"},
            "spec": {"content": content, "enableParameters": params},
        }))
        .expect("command")
    }

    fn entry(action: InstanceAction) -> InvocationResult {
        InvocationResult {
            instance_id: "node-0001".into(),
            invocation_id: "id-1".into(),
            action: Some(action),
            target_version: Some("3.3.0".into()),
            version_before: Some("3.2.1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn installer_gets_action_and_versions_as_environment() {
        let (argv, env) = installer_argv(
            &command("install.sh {{version}}", true),
            &entry(InstanceAction::Update),
        )
        .expect("argv");
        assert_eq!(argv[2], "install.sh \"${NODEOPS_PARAM_version}\"");
        let env: BTreeMap<_, _> = env.into_iter().collect();
        assert_eq!(env["NODEOPS_PARAM_action"], "update");
        assert_eq!(env["NODEOPS_PARAM_version"], "3.3.0");
        assert_eq!(env["NODEOPS_PARAM_previousVersion"], "3.2.1");
        let (_, env) = installer_argv(
            &command("install.sh", false),
            &entry(InstanceAction::Install),
        )
        .expect("no placeholders");
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn installer_job_runs_on_the_host_in_the_agent_namespace() {
        let job = installer_job(
            &invocation(),
            &agent(),
            &command("install.sh", false),
            &entry(InstanceAction::Install),
            &Runner {
                image: "example/runner:1".into(),
                host_process: "kubelet".into(),
                image_pull_policy: Some("Never".into()),
            },
        )
        .expect("job");
        assert_eq!(job.metadata.namespace.as_deref(), Some("nodeops-agents"));
        assert_eq!(
            job.metadata.owner_references.as_ref().expect("owner")[0].kind,
            "NodeAgent"
        );
        let ann = job.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(ann[INVOCATION_ID_ANNOTATION], "id-1");
        assert_eq!(ann[OWNER_NAMESPACE_ANNOTATION], "ops");
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.host_pid, Some(true));
        assert_eq!(pod.node_name.as_deref(), Some("node-0001"));
        // The installer image runs, with the runner copied in from the runner image.
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("example/installer:1")
        );
        let init = &pod.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.image.as_deref(), Some("example/runner:1"));
        assert_eq!(init.image_pull_policy.as_deref(), Some("Never"));
        let args = pod.containers[0].args.clone().expect("args");
        assert_eq!(
            args[..4],
            ["--host", "--host-process", "kubelet", "--stage-payload"]
        );
    }

    #[test]
    fn remote_job_mounts_the_secret_and_never_carries_its_value() {
        let inv = invocation();
        let host = inv.spec.remote_install_meta.clone().expect("meta")[0].clone();
        let mut e = entry(InstanceAction::RemoteInstall);
        e.instance_id = "10.0.0.5".into();
        let job = remote_job(
            &inv,
            &agent(),
            &command("echo {{version}}", true),
            "node-0007",
            &host,
            &e,
            "ghcr.io/nodeops/nodeops-exec:v0.1.0",
        )
        .expect("job");
        assert_eq!(job.metadata.namespace.as_deref(), Some("ops"));
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.node_name.as_deref(), Some("node-0007"));
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args");
        assert!(
            args.windows(2)
                .any(|w| w == ["--ssh-key-file", "/etc/nodeops/ssh/ssh-privatekey"]),
            "{args:?}"
        );
        assert!(args.windows(2).any(|w| w == ["--ssh-host", "10.0.0.5"]));
        assert!(
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .is_none()
        );
        // The one Secret the invocation names, and no service account token.
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name, None);
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes.len(), 1, "{volumes:?}");
        let vol = &volumes[0];
        assert_eq!(
            vol.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            Some("ssh-creds")
        );
        assert!(c.env_from.is_none());
        // Host keys are pinned unless the invocation opts out, visibly.
        assert!(!args.iter().any(|a| a == "--ssh-accept-unknown-host-key"));
        let mut insecure = host.clone();
        insecure.insecure_accept_unknown_host_key = true;
        let job = remote_job(
            &inv,
            &agent(),
            &command("echo {{version}}", true),
            "node-0007",
            &insecure,
            &e,
            "ghcr.io/nodeops/nodeops-exec:v0.1.0",
        )
        .expect("job");
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        let args = pod.containers[0].args.clone().expect("args");
        assert!(
            args.iter().any(|a| a == "--ssh-accept-unknown-host-key"),
            "{args:?}"
        );
        let env = c.env.clone().expect("env");
        // `$$` is the kubelet's escape of `$`: the runner receives the script as written.
        assert_eq!(
            env[0].value.as_deref(),
            Some("echo \"$${NODEOPS_PARAM_version}\"")
        );
        assert!(
            env.iter().all(|v| v.value_from.is_none()),
            "no secret value in the environment"
        );
    }

    #[test]
    fn credential_keys_default_by_login_kind() {
        let mut host = invocation().spec.remote_install_meta.expect("meta")[0].clone();
        assert_eq!(credential_key(&host), "ssh-privatekey");
        host.use_pem = false;
        assert_eq!(credential_key(&host), "password");
        host.credentials_secret_ref.key = Some("pw".into());
        assert_eq!(credential_key(&host), "pw");
    }
}
