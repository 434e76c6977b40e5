//! [`Cluster`]: locators and members of one cluster in this process, each a real
//! [`Member`] on its own loopback UDP port with real QUIC and mutual TLS from one in-memory
//! CA.
//!
//! Nodes are addressed by name. Each keeps its configuration, so a killed node can be
//! restarted as the same process would be: same name, same address, same working directory,
//! a new identity. Locators get fixed ports (reserved before anything starts) so that every
//! node can list them; members take ephemeral ports.
//!
//! A node's own fault rules ([`Cluster::faults`]) belong to its current messenger: a node
//! that reconnects after being forced out gets a new messenger, with no rules. To keep a
//! node cut off across its reconnects, put the rules on the other side of the cut, at every
//! other node ([`Cluster::cut_off`]; [`Cluster::partition`] puts them on both sides).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use cohort_membership::{Member, MemberConfig, StartError};
use cohort_transport::socket::SocketFaults;
use cohort_transport::{BindError, MemberKind, View};
use tokio::task::JoinSet;

use crate::{PATIENCE, TestCa};

/// One node's settings and, while it runs, the member.
struct Node {
    config: MemberConfig,
    member: Option<Member>,
    /// Set when the node runs on a runtime of its own (see [`Cluster::add_on_own_runtime`]).
    runtime: Option<OwnRuntime>,
}

/// A single-threaded runtime on a thread of its own, so that one node can be stalled
/// without stalling the others.
struct OwnRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An in-process cluster. Dropping it stops every node as a crash would and removes its
/// working directory.
pub struct Cluster {
    ca: TestCa,
    dir: PathBuf,
    locators: Vec<SocketAddr>,
    nodes: BTreeMap<String, Node>,
    /// Applied to every configuration this cluster makes.
    tune: fn(&mut MemberConfig),
}

impl Cluster {
    /// A cluster with `locators` locator addresses reserved (named `locator-1`, ...) and
    /// nothing started.
    pub fn new(locators: usize) -> Cluster {
        Cluster::tuned(locators, |_| {})
    }

    /// Like [`Cluster::new`], with `tune` applied to every node's configuration.
    pub fn tuned(locators: usize, tune: fn(&mut MemberConfig)) -> Cluster {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cohort-cluster-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the cluster's working directory");
        Cluster {
            ca: TestCa::new(),
            dir,
            locators: (0..locators).map(|_| reserve_port()).collect(),
            nodes: BTreeMap::new(),
            tune,
        }
    }

    /// The locator addresses every node is configured with.
    pub fn locator_addresses(&self) -> &[SocketAddr] {
        &self.locators
    }

    /// The name of locator `i` (from 1).
    pub fn locator_name(i: usize) -> String {
        format!("locator-{i}")
    }

    /// A configuration for a node named `name`: a certificate from the cluster's CA, every
    /// locator listed, this cluster's working directory and tuning. Locator `locator-i`
    /// binds its reserved address.
    pub fn config(&self, name: &str, kind: MemberKind) -> MemberConfig {
        let mut config = MemberConfig::new(self.ca.settings(name));
        config.identity.name = name.to_owned();
        config.identity.kind = kind;
        config.locators = self.locators.clone();
        config.working_dir = Some(self.dir.clone());
        if let Some(i) = name
            .strip_prefix("locator-")
            .and_then(|i| i.parse::<usize>().ok())
            && let Some(address) = self.locators.get(i.wrapping_sub(1))
        {
            config.identity.bind = *address;
        }
        (self.tune)(&mut config);
        config
    }

    /// Starts every locator and `members` members (`member-1`, ...) at once, and waits
    /// until all of them report being in a view. Panics on any start error.
    pub async fn start(&mut self, members: usize) {
        let mut configs: Vec<MemberConfig> = (1..=self.locators.len())
            .map(|i| self.config(&Cluster::locator_name(i), MemberKind::Locator))
            .collect();
        configs
            .extend((1..=members).map(|i| self.config(&format!("member-{i}"), MemberKind::Member)));
        let results = self.start_all(configs).await;
        for (name, result) in results {
            if let Err(error) = result {
                panic!("{name} did not start: {error}");
            }
        }
    }

    /// Starts these configurations at once; returns each node's outcome by name. Nodes
    /// that started are kept. A node restarted this way waits (bounded) for its old socket
    /// to be freed, as with [`Cluster::restart`].
    pub async fn start_all(
        &mut self,
        configs: Vec<MemberConfig>,
    ) -> Vec<(String, Result<(), StartError>)> {
        let mut starting = JoinSet::new();
        for config in configs {
            starting.spawn(async move {
                let result = start_when_free(&config).await;
                (config, result)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = starting.join_next().await {
            let (config, result) = joined.expect("a start task panicked");
            let name = config.identity.name.clone();
            let outcome = result.map(|member| self.keep(config, member, None));
            outcomes.push((name, outcome));
        }
        outcomes
    }

    /// Starts one node from `config` (see [`Cluster::config`]) and keeps it.
    pub async fn add(&mut self, config: MemberConfig) -> Result<&Member, StartError> {
        let name = config.identity.name.clone();
        let member = Member::start(config.clone()).await?;
        self.keep(config, member, None);
        Ok(self.member(&name))
    }

    /// Records a started node under its name.
    fn keep(&mut self, config: MemberConfig, member: Member, runtime: Option<OwnRuntime>) {
        let name = config.identity.name.clone();
        let node = Node {
            config,
            member: Some(member),
            runtime,
        };
        self.nodes.insert(name, node);
    }

    /// Starts one node on a single-threaded runtime of its own thread, so that
    /// [`Cluster::stall`] can block it while every other node runs on.
    pub async fn add_on_own_runtime(&mut self, config: MemberConfig) -> Result<(), StartError> {
        let name = config.identity.name.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let start_config = config.clone();
        let thread = std::thread::Builder::new()
            .name(format!("node-{name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a node runtime");
                runtime.block_on(async move {
                    let handle = tokio::runtime::Handle::current();
                    let result = Member::start(start_config).await;
                    let _ = started_tx.send((result, handle));
                    // The node's tasks run while this waits.
                    let _ = stop_rx.await;
                });
            })
            .expect("spawn a node thread");
        let (result, handle) = started_rx.await.expect("the node thread reports its start");
        let runtime = OwnRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        let member = result?;
        self.keep(config, member, Some(runtime));
        Ok(())
    }

    /// Blocks node `name`'s runtime (started with [`Cluster::add_on_own_runtime`]) for
    /// `duration`, as a long pause of its process would: none of its tasks runs.
    pub fn stall(&self, name: &str, duration: Duration) {
        let runtime = self
            .nodes
            .get(name)
            .and_then(|n| n.runtime.as_ref())
            .unwrap_or_else(|| panic!("{name} does not run on a runtime of its own"));
        // Deliberately blocking: this is the stall.
        runtime
            .handle
            .spawn(async move { std::thread::sleep(duration) });
    }

    /// Cuts every path between the nodes in `a` and those in `b`, both directions.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                let (mx, my) = (self.member(x), self.member(y));
                mx.messenger().faults().blackhole(my.address());
                my.messenger().faults().blackhole(mx.address());
            }
        }
    }

    /// Waits until the named nodes have installed the same view with exactly these
    /// members, and returns it.
    pub async fn agreed_view_of(&self, names: &[&str], limit: Duration) -> View {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let views: Vec<View> = names.iter().map(|n| self.member(n).view()).collect();
            let first = &views[0];
            let expected: Vec<_> = names.iter().map(|n| self.member(n).id().clone()).collect();
            if views.iter().all(|v| same_view(v, first))
                && first.len() == names.len()
                && expected.iter().all(|m| first.contains(m))
            {
                return first.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                let summary: Vec<String> = names
                    .iter()
                    .zip(&views)
                    .map(|(name, v)| format!("{name}: {v}"))
                    .collect();
                panic!(
                    "{names:?} did not agree on a view of just themselves within {limit:?}: {}",
                    summary.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until heartbeats flow between node `name` and the ring neighbours that watch
    /// it, in the view `name` holds now: since this call its successor received a datagram
    /// from it, and it received one from its predecessor (whose QUIC acknowledgement is the
    /// predecessor's sign of life from it). An error names the flow that never came.
    pub async fn heartbeats_flowing(&self, name: &str, limit: Duration) -> Result<(), String> {
        let view = self.member(name).view();
        let members = view.members();
        let me = self.member(name).id().clone();
        let at = members
            .iter()
            .position(|m| *m == me)
            .ok_or_else(|| format!("{name} is not in its own view {view}"))?;
        let n = members.len();
        if n == 1 {
            return Ok(());
        }
        let successor = members[(at + 1) % n].name().to_owned();
        let predecessor = members[(at + n - 1) % n].name().to_owned();
        // (receiver, sender) of each heartbeat to wait for.
        let flows = [
            (successor.clone(), name.to_owned()),
            (name.to_owned(), predecessor.clone()),
        ];
        let received = |(receiver, sender): &(String, String)| {
            let sender = self.member(sender).id().clone();
            self.member(receiver)
                .messenger()
                .peer_stats(&sender)
                .map_or(0, |s| s.datagrams_received)
        };
        let baseline: Vec<u64> = flows.iter().map(received).collect();
        let deadline = tokio::time::Instant::now() + limit;
        while !flows.iter().zip(&baseline).all(|(f, b)| received(f) > *b) {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "heartbeats never flowed {predecessor} → {name} → {successor} within {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The running node `name`. Panics if there is none.
    pub fn member(&self, name: &str) -> &Member {
        self.nodes
            .get(name)
            .and_then(|n| n.member.as_ref())
            .unwrap_or_else(|| panic!("no running node named {name}"))
    }

    /// The names of the running nodes.
    pub fn running(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.member.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Node `name`'s socket faults (see [`SocketFaults`]): those of its current messenger.
    pub fn faults(&self, name: &str) -> SocketFaults {
        self.member(name).messenger().faults().clone()
    }

    /// Drops all traffic between node `name` and every other running node, both ways, at
    /// the other nodes' sockets, so that the cut holds whatever messenger `name` runs
    /// (through its reconnects) until [`Cluster::heal_all`].
    pub fn cut_off(&self, name: &str) {
        let address = self.member(name).address();
        for other in self.running().iter().filter(|n| *n != name) {
            self.faults(other).blackhole(address);
        }
    }

    /// Removes every fault rule of every running node's current messenger.
    pub fn heal_all(&self) {
        for name in self.running() {
            self.faults(&name).heal();
        }
    }

    /// Starts `config` as a process of its own (a thread with its own runtime) without
    /// waiting for it to be admitted: for a joiner that is ended while it joins.
    pub fn spawn_joiner(&self, config: MemberConfig) -> Joiner {
        let name = config.identity.name.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("joiner-{name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a joiner runtime");
                runtime.block_on(async move {
                    let start = Member::start(config);
                    tokio::pin!(start);
                    let admitted = tokio::select! {
                        result = &mut start => result.ok(),
                        _ = &mut stop_rx => None,
                    };
                    // Admitted before it was ended: a member until then.
                    if let Some(member) = admitted {
                        let _ = stop_rx.await;
                        drop(member);
                    }
                });
                // Dropping the runtime drops every task and socket of the process unpolled:
                // nothing more is sent, and the port closes.
            })
            .expect("spawn a joiner thread");
        Joiner {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops node `name` as a crash would: no leave, no goodbye. Its configuration is kept
    /// for [`Cluster::restart`].
    pub async fn kill(&mut self, name: &str) {
        let member = self
            .nodes
            .get_mut(name)
            .and_then(|n| n.member.take())
            .unwrap_or_else(|| panic!("no running node named {name}"));
        member.kill().await;
        if let Some(node) = self.nodes.get_mut(name) {
            node.runtime = None;
        }
    }

    /// Ends node `name` (started with [`Cluster::add_on_own_runtime`]) as SIGKILL ends a
    /// process: it sends nothing more, and its runtime is dropped with every task on it, so
    /// the last handle on its socket goes and the kernel closes its port. Returns once the
    /// node's thread has ended. Its configuration is kept for [`Cluster::restart`].
    pub async fn end_process(&mut self, name: &str) {
        let node = self
            .nodes
            .get_mut(name)
            .unwrap_or_else(|| panic!("no node named {name}"));
        let member = node
            .member
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        let runtime = node
            .runtime
            .take()
            .unwrap_or_else(|| panic!("{name} does not run on a runtime of its own"));
        member.messenger().faults().isolate();
        drop(member);
        // Stopping the runtime joins its thread: not on this runtime's threads.
        tokio::task::spawn_blocking(move || drop(runtime))
            .await
            .expect("the node's thread ends");
    }

    /// Node `name` leaves gracefully; returns whether the view without it arrived.
    pub async fn leave(&mut self, name: &str) -> bool {
        let member = self
            .nodes
            .get_mut(name)
            .and_then(|n| n.member.take())
            .unwrap_or_else(|| panic!("no running node named {name}"));
        member.leave().await
    }

    /// Starts a stopped node again with the configuration it had, as a new process would:
    /// same name and address, new identity. Waits (bounded) for the old socket to be freed.
    pub async fn restart(&mut self, name: &str) -> Result<&Member, StartError> {
        let config = self
            .nodes
            .get(name)
            .filter(|n| n.member.is_none())
            .map(|n| n.config.clone())
            .unwrap_or_else(|| panic!("no stopped node named {name}"));
        self.restart_with(name, config).await
    }

    /// Like [`Cluster::restart`] with a changed configuration.
    pub async fn restart_with(
        &mut self,
        name: &str,
        config: MemberConfig,
    ) -> Result<&Member, StartError> {
        let member = start_when_free(&config).await?;
        let node = self.nodes.get_mut(name).expect("checked above");
        node.config = config;
        node.member = Some(member);
        Ok(self.member(name))
    }

    /// Waits until every running node has installed the same view (same id, same members
    /// in the same order) with `size` members, and returns it.
    pub async fn agreed_view(&self, size: usize, limit: Duration) -> View {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let views: Vec<View> = self
                .nodes
                .values()
                .filter_map(|n| n.member.as_ref())
                .map(Member::view)
                .collect();
            if let Some(first) = views.first()
                && first.len() == size
                && views.iter().all(|v| same_view(v, first))
            {
                return first.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                let summary: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|(name, n)| n.member.as_ref().map(|m| (name, m.view())))
                    .map(|(name, v)| format!("{name}: view {} of {}", v.id(), v.len()))
                    .collect();
                panic!(
                    "no agreement on a view of {size} members within {limit:?}: {}",
                    summary.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(member) = node.member.take() {
                member.messenger().faults().isolate();
                drop(member);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a member from `config`, waiting (bounded) while its address is still held by a
/// stopped node's socket: a restart reuses the address, and a stopped socket's last handle
/// may go a moment after the node stopped.
async fn start_when_free(config: &MemberConfig) -> Result<Member, StartError> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match Member::start(config.clone()).await {
            Err(StartError::Bind(BindError::Socket { source, .. }))
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// A process started with [`Cluster::spawn_joiner`]; dropping it ends it too.
#[must_use = "dropping a Joiner ends its process at once"]
pub struct Joiner {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Joiner {
    /// Ends the process as SIGKILL would: its runtime is dropped with every task on it, so
    /// it sends nothing more and its port closes. Returns once its thread has ended.
    pub async fn end(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Joining blocks: not on this runtime's threads.
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            assert!(matches!(joined, Ok(Ok(()))), "the joiner's thread panicked");
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Same id and the same members (by identity) in the same order.
pub fn same_view(a: &View, b: &View) -> bool {
    a.id() == b.id()
        && a.members().len() == b.members().len()
        && a.members().iter().zip(b.members()).all(|(x, y)| x == y)
}

/// A free loopback UDP port: bound, noted and released.
fn reserve_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("reserve a loopback UDP port")
}
