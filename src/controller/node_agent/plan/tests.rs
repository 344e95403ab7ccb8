use super::*;
use serde_json::json;

fn agent(mode: &str) -> NodeAgent {
    let mut a: NodeAgent = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1",
        "kind": "NodeAgent",
        "metadata": {"name": "telescope", "uid": "agent-uid", "generation": 2},
        "spec": {
            "namespace": "nodeops-agents",
            "mode": mode,
            "image": "registry.example.com/telescope",
            "basicVersion": "3.2.1",
            "podAnnotations": {"example.com/scrape": "true"},
        },
    }))
    .expect("agent");
    if mode == "HostInstaller" {
        a.spec.installer = serde_json::from_value(
            json!({"image": "example/installer:1", "commandRef": "install-telescope"}),
        )
        .expect("installer");
    }
    a
}

fn node(name: &str, version: Option<&str>) -> NodeView {
    NodeView {
        name: name.into(),
        uid: format!("uid-{name}"),
        version: version.map(String::from),
    }
}

fn world() -> World {
    World {
        now: "2026-11-26T00:00:00Z".parse().expect("ts"),
        nodes: vec![
            node("n1", Some("3.2.1")),
            node("n2", Some("3.2.1")),
            node("n3", Some("3.3.0")),
            node("n4", None),
        ],
        ready: [("n1".into(), "3.2.1".into()), ("n3".into(), "3.3.0".into())]
            .into_iter()
            .collect(),
        daemonsets: BTreeMap::new(),
    }
}

#[test]
fn one_daemonset_per_live_version_selecting_on_the_label() {
    let a = agent("DaemonSet");
    let p = plan(&a, &world());
    let names: Vec<_> = p
        .apply
        .iter()
        .map(|d| d.metadata.name.clone().expect("name"))
        .collect();
    assert_eq!(names, ["telescope-3.2.1", "telescope-3.3.0"]);
    let ds = &p.apply[0];
    let pod = ds
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod");
    assert_eq!(
        pod.node_selector.as_ref().expect("selector")["agent.nodeops.io/telescope"],
        "3.2.1"
    );
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example.com/telescope:3.2.1")
    );
    assert_eq!(
        ds.metadata.owner_references.as_ref().expect("owner")[0].kind,
        "NodeAgent"
    );
    assert_eq!(ds.metadata.namespace.as_deref(), Some("nodeops-agents"));
    assert!(p.delete.is_empty());
}

#[test]
fn unchanged_daemonsets_are_not_rewritten_and_unused_ones_go() {
    let a = agent("DaemonSet");
    let mut w = world();
    let current = render_daemonset(&a, "3.2.1");
    w.daemonsets
        .insert("telescope-3.2.1".into(), template_hash(&current));
    w.daemonsets
        .insert("telescope-3.3.0".into(), Some("stale".into()));
    w.daemonsets.insert("telescope-3.1.0".into(), None);
    let p = plan(&a, &w);
    let applied: Vec<_> = p
        .apply
        .iter()
        .map(|d| d.metadata.name.clone().expect("name"))
        .collect();
    assert_eq!(applied, ["telescope-3.3.0"], "only the changed one");
    assert_eq!(p.delete, ["telescope-3.1.0"]);
}

#[test]
fn status_counts_versions_and_readiness() {
    let a = agent("DaemonSet");
    let p = plan(&a, &world());
    let s = &p.status;
    assert_eq!(s.installed_nodes, 3);
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(
        s.versions
            .iter()
            .map(|v| (v.version.as_str(), v.nodes, v.ready))
            .collect::<Vec<_>>(),
        [("3.2.1", 2, 1), ("3.3.0", 1, 1)]
    );
    assert_eq!(s.agents.len(), 3);
    assert_eq!(s.agents[0].agent_uuid, agent_uuid("agent-uid", "uid-n1"));
    let ready = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AgentsNotReady")
    );
    assert!(p.notes.is_empty(), "no Event for not ready");

    let mut w = world();
    w.ready.insert(("n2".into(), "3.2.1".into()));
    let mut again = a.clone();
    again.status = Some(p.status.clone());
    let p2 = plan(&again, &w);
    let ready2 = p2
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready2.status, "True");
    assert_eq!(p2.notes.len(), 1, "an Event on the transition");
}

#[test]
fn host_installer_mode_runs_no_daemonsets() {
    let a = agent("HostInstaller");
    let mut w = world();
    w.daemonsets.insert("telescope-3.2.1".into(), None);
    let p = plan(&a, &w);
    assert!(p.apply.is_empty());
    assert_eq!(p.delete, ["telescope-3.2.1"]);
    assert_eq!(p.status.installed_nodes, 3);
    assert!(conditions::is_true(&p.status.conditions, conditions::READY));
}

#[test]
fn stalled_sets_stalled_and_not_ready() {
    let a = agent("DaemonSet");
    let s = stalled(
        &a,
        "NamespaceNotFound",
        "namespace nodeops-agents does not exist",
        world().now,
    );
    assert!(conditions::is_true(&s.conditions, conditions::STALLED));
    assert!(!conditions::is_true(&s.conditions, conditions::READY));
}

#[test]
fn status_lists_at_most_a_hundred_agents_and_counts_them_all() {
    let a = agent("DaemonSet");
    let mut w = world();
    w.nodes = (0..5000)
        .map(|i| node(&format!("{}{i:05}", "n".repeat(240)), Some(&"v".repeat(64))))
        .collect();
    let p = plan(&a, &w);
    let s = &p.status;
    assert_eq!(s.installed_nodes, 5000);
    assert_eq!(s.agents.len(), AGENTS_IN_STATUS);
    assert_eq!(s.agents[0].node_name, w.nodes[0].name, "the first by name");
    assert_eq!(
        instances("agent-uid", &w.nodes).len(),
        5000,
        "every one for nodeops get"
    );
    // At the longest node names and versions, the whole object stays far under 512 KiB.
    let mut obj = a.clone();
    obj.status = Some(s.clone());
    let size = serde_json::to_vec(&obj).expect("json").len();
    assert!(size < 64 * 1024, "{size} bytes");
}
