//! Ledgers: what watches saw, by uid (each Job, child, slot and node label), kept through outages and re-lists.

use super::*;

pub(crate) fn uid_of<K: Resource>(obj: &K) -> String {
    obj.meta().uid.clone().unwrap_or_default()
}

/// Keeps account of one kind from a watch.
pub(crate) trait Ledger<K>: Send + 'static {
    fn seen(&mut self, obj: &K);
    fn deleted(&mut self, _obj: &K) {}
    /// A re-list (after a restart of the watch, for example on 410 Gone) ended; `present`
    /// holds the uids it listed: anything else was deleted while the watch was away.
    fn relisted(&mut self, _present: &BTreeSet<String>) {}
    /// A re-list starts: until it ends, objects arrive in name order, not in the order
    /// they changed, so counts taken in between are not states the cluster was in.
    fn relist_started(&mut self) {}
}

/// A ledger fed by a watch that rides out outages (errors back off, the watch resumes or
/// re-lists).
pub(crate) struct Watched<L> {
    pub(crate) ledger: L,
    /// Lists made: 1 for the first, one more for every re-list.
    pub(crate) lists: usize,
    pub(crate) errors: Vec<String>,
    pub(crate) listing: Option<BTreeSet<String>>,
}

pub(crate) type Shared<L> = Arc<Mutex<Watched<L>>>;

pub(crate) fn watch<K, L>(
    api: Api<K>,
    config: watcher::Config,
    ledger: L,
) -> (Shared<L>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    L: Ledger<K>,
{
    let shared = Arc::new(Mutex::new(Watched {
        ledger,
        lists: 0,
        errors: Vec::new(),
        listing: None,
    }));
    let out = shared.clone();
    let handle = tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let mut guard = out.lock().expect("ledger");
            let w = &mut *guard;
            match item {
                Ok(watcher::Event::Init) => {
                    w.lists += 1;
                    w.listing = Some(BTreeSet::new());
                    if w.lists > 1 {
                        w.ledger.relist_started();
                    }
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(listing) = w.listing.as_mut() {
                        listing.insert(uid_of(&obj));
                    }
                    w.ledger.seen(&obj);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(listing) = w.listing.take() {
                        w.ledger.relisted(&listing);
                    }
                }
                Ok(watcher::Event::Apply(obj)) => w.ledger.seen(&obj),
                Ok(watcher::Event::Delete(obj)) => w.ledger.deleted(&obj),
                Err(e) => w.errors.push(e.to_string()),
            }
        }
    });
    (shared, handle)
}

/// Waits until each ledger's first list is in.
pub(crate) async fn listed<L>(ledgers: &[&Shared<L>]) {
    for l in ledgers {
        let t = Instant::now();
        loop {
            {
                let w = l.lock().expect("ledger");
                if w.lists > 0 && w.listing.is_none() {
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "a watch never listed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Every Job of the namespace: the uids seen under each name and for each (owner, node)
/// run, and the runs in flight per owner (created, not Complete or Failed, not deleted)
/// with the highest count seen.
#[derive(Default)]
pub(crate) struct Jobs {
    /// A re-list is in progress: the maximum is taken when it ends.
    pub(crate) relisting: bool,
    pub(crate) uids_by_name: BTreeMap<String, BTreeSet<String>>,
    pub(crate) uids_by_run: BTreeMap<(String, String), BTreeSet<String>>,
    pub(crate) in_flight: BTreeMap<String, BTreeSet<String>>,
    pub(crate) finished: BTreeSet<String>,
    pub(crate) max_in_flight: BTreeMap<String, usize>,
    /// When the watch saw each Job finish (Complete or Failed), in order.
    pub(crate) finished_at: Vec<Instant>,
    /// When the watch first saw each Job, in order.
    pub(crate) created_at: Vec<Instant>,
}

impl Ledger<Job> for Jobs {
    fn seen(&mut self, job: &Job) {
        let uid = uid_of(job);
        let owner = job
            .labels()
            .get(OWNER_UID_LABEL)
            .cloned()
            .unwrap_or_default();
        let node = job
            .annotations()
            .get(NODE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if self
            .uids_by_name
            .entry(job.name_any())
            .or_default()
            .insert(uid.clone())
        {
            self.created_at.push(Instant::now());
        }
        self.uids_by_run
            .entry((owner.clone(), node))
            .or_default()
            .insert(uid.clone());
        if job_finished(job) {
            if self.finished.insert(uid.clone()) {
                self.finished_at.push(Instant::now());
            }
            if let Some(set) = self.in_flight.get_mut(&owner) {
                set.remove(&uid);
            }
        } else if !self.finished.contains(&uid) {
            let set = self.in_flight.entry(owner.clone()).or_default();
            set.insert(uid);
            let n = set.len();
            if !self.relisting {
                let max = self.max_in_flight.entry(owner).or_default();
                *max = (*max).max(n);
            }
        }
    }

    fn relist_started(&mut self) {
        self.relisting = true;
    }

    fn deleted(&mut self, job: &Job) {
        let owner = job
            .labels()
            .get(OWNER_UID_LABEL)
            .cloned()
            .unwrap_or_default();
        if let Some(set) = self.in_flight.get_mut(&owner) {
            set.remove(&uid_of(job));
        }
    }

    fn relisted(&mut self, present: &BTreeSet<String>) {
        for set in self.in_flight.values_mut() {
            set.retain(|u| present.contains(u));
        }
        if self.relisting {
            self.relisting = false;
            for (owner, set) in &self.in_flight {
                let max = self.max_in_flight.entry(owner.clone()).or_default();
                *max = (*max).max(set.len());
            }
        }
    }
}

impl Jobs {
    /// Job names seen with more than one uid, and runs (owner, node) with more than one Job.
    pub(crate) fn duplicates(&self) -> Vec<String> {
        let names = self
            .uids_by_name
            .iter()
            .filter(|(_, uids)| uids.len() > 1)
            .map(|(name, uids)| format!("Job {name}: {} uids {uids:?}", uids.len()));
        let runs = self
            .uids_by_run
            .iter()
            .filter(|(_, uids)| uids.len() > 1)
            .map(|((owner, node), uids)| {
                format!("owner {owner} node {node}: {} Jobs {uids:?}", uids.len())
            });
        names.chain(runs).collect()
    }

    pub(crate) fn runs_of(&self, owner: &str) -> usize {
        self.uids_by_run.keys().filter(|(o, _)| o == owner).count()
    }

    pub(crate) fn finished_of(&self, owner: &str) -> usize {
        self.uids_by_run
            .iter()
            .filter(|((o, _), uids)| o == owner && uids.iter().all(|u| self.finished.contains(u)))
            .count()
    }
}

/// The child AgentInvocations of upgrade jobs: uids per (role, node), and children in
/// flight (created, instance not final) with the highest count seen.
#[derive(Default)]
pub(crate) struct Children {
    pub(crate) uids_by_node: BTreeMap<(String, String), BTreeSet<String>>,
    pub(crate) in_flight: BTreeSet<String>,
    pub(crate) finished: BTreeSet<String>,
    pub(crate) max_in_flight: usize,
    /// A re-list is in progress: the maximum is taken when it ends.
    pub(crate) relisting: bool,
}

pub(crate) fn child_final(inv: &AgentInvocation) -> bool {
    inv.status
        .as_ref()
        .and_then(|s| s.invocations.first())
        .is_some_and(|e| e.phase.is_final())
}

impl Ledger<AgentInvocation> for Children {
    fn seen(&mut self, inv: &AgentInvocation) {
        let uid = uid_of(inv);
        let role = inv.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
        let node = inv
            .annotations()
            .get(NODE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        self.uids_by_node
            .entry((role, node))
            .or_default()
            .insert(uid.clone());
        if child_final(inv) {
            self.in_flight.remove(&uid);
            self.finished.insert(uid);
        } else if !self.finished.contains(&uid) {
            self.in_flight.insert(uid);
            if !self.relisting {
                self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
            }
        }
    }

    fn deleted(&mut self, inv: &AgentInvocation) {
        self.in_flight.remove(&uid_of(inv));
    }

    fn relist_started(&mut self) {
        self.relisting = true;
    }

    fn relisted(&mut self, present: &BTreeSet<String>) {
        self.in_flight.retain(|u| present.contains(u));
        if self.relisting {
            self.relisting = false;
            self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
        }
    }
}

/// A node label's values per node, in the order they were seen (repeats collapsed;
/// `(removed)` when the label went away).
pub(crate) struct Labels {
    pub(crate) key: String,
    pub(crate) history: BTreeMap<String, Vec<String>>,
}

impl Labels {
    pub(crate) fn new(key: String) -> Self {
        Self {
            key,
            history: BTreeMap::new(),
        }
    }

    pub(crate) fn push(&mut self, node: String, value: &str) {
        let h = self.history.entry(node).or_default();
        if h.last().map(String::as_str) != Some(value) {
            h.push(value.to_string());
        }
    }
}

impl Ledger<Node> for Labels {
    fn seen(&mut self, node: &Node) {
        let value = node
            .labels()
            .get(&self.key)
            .cloned()
            .unwrap_or_else(|| "(removed)".into());
        self.push(node.name_any(), &value);
    }

    fn deleted(&mut self, node: &Node) {
        self.push(node.name_any(), "(removed)");
    }
}

/// An Invoker's children: the uids seen per scheduled slot, and the children's names.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) uids_by_slot: BTreeMap<String, BTreeSet<String>>,
    pub(crate) names: BTreeSet<String>,
}

impl Ledger<AsyncCommand> for Runs {
    fn seen(&mut self, child: &AsyncCommand) {
        let slot = child
            .annotations()
            .get(SCHEDULED_TIME_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        self.uids_by_slot
            .entry(slot)
            .or_default()
            .insert(uid_of(child));
        self.names.insert(child.name_any());
    }
}

/// One AsyncCommand's status as the watch saw it go backwards: the succeeded count below
/// the highest seen, node-0001's final result rolled back to Pending.
#[derive(Default)]
pub(crate) struct Regressions {
    pub(crate) max_succeeded: i32,
    pub(crate) count_dropped: usize,
    pub(crate) node_final: bool,
    pub(crate) node_rolled_back: usize,
}

impl Ledger<AsyncCommand> for Regressions {
    fn seen(&mut self, c: &AsyncCommand) {
        let Some(s) = c.status.as_ref() else { return };
        if s.succeeded < self.max_succeeded {
            self.count_dropped += 1;
        }
        self.max_succeeded = self.max_succeeded.max(s.succeeded);
        if let Some(e) = s.cmd_jobs.iter().find(|e| e.node_name == "node-0001") {
            if e.phase.is_final() {
                self.node_final = true;
            } else if self.node_final && e.phase == NodePhase::Pending {
                self.node_rolled_back += 1;
            }
        }
    }
}
