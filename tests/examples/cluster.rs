//! A small cohort cluster in one process: the first thing to run after cloning.
//!
//! ```text
//! cargo run --example cluster
//! cargo run --example cluster -- --members 12 --messages 5
//! cargo run --example cluster -- --scenario coordinator-leaves
//! cargo run --example cluster -- --scenario join-late
//! cargo run --example cluster -- --scenario rolling-upgrade
//! RUST_LOG=cohort_membership=debug cargo run --example cluster
//! ```
//!
//! It runs 2 locators and 5 members (choose with `--members`) on loopback with the
//! embedded defaults, through the membership layer's public front door,
//! [`Member::start`]. It shows, in order:
//!
//! 1. **Forming a cluster.** One in-memory CA issues a certificate per node; every
//!    connection is mutual TLS over QUIC. The two locators get fixed addresses (reserved
//!    before anything starts) that every node lists; all nodes start at the same moment.
//!    The locators agree on one founder, the others find the cluster through them and
//!    join, and the coordinator batches the joins into a few view changes. Every view is
//!    printed as a table the moment any node reports it, until every node reports the
//!    same view with everyone in it. The locators persist that view in a temporary
//!    working directory, removed at the end.
//! 2. **Application messages.** Every node sends every other node of the view a few
//!    `Note`s at once (one `send`, many recipients). Receivers check that each note
//!    arrived exactly once and in order per sender.
//! 3. **A scenario** (`--scenario`):
//!    - `leave` (default): a member leaves gracefully. The next view marks it as left, and
//!      a send to it is reported in [`SendOutcome::not_in_view`].
//!    - `coordinator-leaves`: the coordinator (a locator) leaves instead; the other locator
//!      takes over as coordinator with no failure detection involved.
//!    - `join-late`: one more member joins the running cluster and exchanges notes with
//!      everyone.
//!    - `rolling-upgrade`: the cluster starts on the legacy UDP protocol (every node an old
//!      member, version v1, no encryption). The locators first, then each member in turn,
//!      leave and come back as bridges (version v2: QUIC and the legacy protocol on one
//!      port, one per recipient by its version), exchanging notes with everyone at each
//!      step. Once no v1 member is left every bridge closes its legacy side, and an old
//!      member that tries to join is refused with the reason.
//! 4. **Everybody leaves**: the members together (one batched view change), then the
//!    locators, the coordinator last. Every note sent was received exactly once.
//!
//! How views and messages flow:
//!
//! ```text
//! Member::start ─► discovery (ask the locators) ─► join via the coordinator ─► in a view
//! coordinator: joins and leaves, batched ─► prepare ─► acks ─► install on every member
//! every node: member.events() ─► follow task ─┐
//!                                              ├─► view log: prints each new view id once,
//! (the view the node was admitted in) ────────┘    knows which view each node is in
//! member.send(note, Normal, [peers]) ─► QUIC stream ─► peer's Subscription<Note>
//!     ─► its receive task: once and in order per sender?
//! ```
//!
//! Message types are plain serde types with a stable [`Tag`] at or above
//! [`Tag::FIRST_APPLICATION`]; tags below it belong to cohort's own protocols.
//!
//! Exit status: 0 when everything happened as described, 1 when something did not happen
//! within its bound (with the reason on stderr), 2 for a bad command line. Logs go to
//! stderr and are filtered by `RUST_LOG` (default `warn`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cohort_certs::{CertificateAuthority, MemberRequest};
use cohort_membership::{Member, MemberConfig, MembershipEvent, Protocol, StartError};
use cohort_transport::{
    Delivery, Envelope, MemberId, MemberKind, Message, Priority, SendOutcome, Subscription, Tag,
    TlsSettings, View, ViewId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

const USAGE: &str = "\
Runs a small cohort cluster in this process: 2 locators and some members with
certificates from an in-memory CA, mutual TLS over QUIC on loopback. Prints every view
as it is installed, exchanges messages, runs a scenario, and everybody leaves.

usage: cargo run --example cluster [-- OPTIONS]

options:
  --members N     members besides the 2 locators, 1 to 64 (default 5)
  --messages N    notes each node sends each other node, 1 to 100 (default 3)
  --scenario S    what happens once the cluster has formed (default leave):
                    leave               a member leaves gracefully
                    coordinator-leaves  the coordinator (a locator) leaves; the other
                                        locator takes over
                    join-late           one more member joins the running cluster
                    rolling-upgrade     the cluster starts on the legacy UDP protocol
                                        and is upgraded to QUIC node by node
  -h, --help      show this help

logging: RUST_LOG filters the logs on stderr (default \"warn\"),
         e.g. RUST_LOG=cohort_membership=debug
";

/// Member names; members beyond this list are named `member-N`.
const NAMES: [&str; 24] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi",
    "psi", "omega",
];
const LOCATORS: usize = 2;
const MEMBERS_RANGE: RangeInclusive<usize> = 1..=64;
const MESSAGES_RANGE: RangeInclusive<u32> = 1..=100;
const DEFAULT_MEMBERS: usize = 5;
const DEFAULT_MESSAGES: u32 = 3;
/// How long the member certificates are valid.
const CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Bound on every wait for something that must happen: agreement on a view, delivery.
/// (`Member::start` bounds itself by the join timeout, 24 s by default.)
const PATIENCE: Duration = Duration::from_secs(20);
/// Bound on one graceful leave: the member waits up to its leave timeout (5 s by default)
/// for the view without it, then flushes for up to 2 s.
const LEAVE_PATIENCE: Duration = Duration::from_secs(10);

/// An application message.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Note {
    /// The sender's name, repeated in the content so the receiver can check it.
    from: String,
    /// 0, 1, 2, ... over all the notes this sender sends, to anyone: each receiver sees a
    /// strictly increasing subsequence, which is "once and in order".
    seq: u32,
    /// Something for people to read.
    text: String,
}

impl Message for Note {
    const TAG: Tag = Tag(0x1_0001);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Leave,
    CoordinatorLeaves,
    JoinLate,
    RollingUpgrade,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::Leave,
        Scenario::CoordinatorLeaves,
        Scenario::JoinLate,
        Scenario::RollingUpgrade,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Leave => "leave",
            Scenario::CoordinatorLeaves => "coordinator-leaves",
            Scenario::JoinLate => "join-late",
            Scenario::RollingUpgrade => "rolling-upgrade",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Options {
    members: usize,
    messages: u32,
    scenario: Scenario,
}

enum Command {
    Run(Options),
    Help,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("cluster: {message}");
            eprintln!("run with --help for usage");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cluster: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("cluster: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut options = Options {
        members: DEFAULT_MEMBERS,
        messages: DEFAULT_MESSAGES,
        scenario: Scenario::Leave,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|raw| format!("argument {raw:?} is not valid UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" if inline.is_none() => return Ok(Command::Help),
            "--members" | "--messages" | "--scenario" => {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => args
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value"))?
                        .into_string()
                        .map_err(|raw| format!("{flag}: value {raw:?} is not valid UTF-8"))?,
                };
                match flag.as_str() {
                    "--members" => {
                        options.members = parse_in_range(&flag, &value, MEMBERS_RANGE)?;
                    }
                    "--messages" => {
                        options.messages = parse_in_range(&flag, &value, MESSAGES_RANGE)?;
                    }
                    _ => options.scenario = parse_scenario(&value)?,
                }
            }
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    Ok(Command::Run(options))
}

fn parse_in_range<T>(flag: &str, value: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let what = || {
        format!(
            "{flag} must be a whole number from {} to {}, got '{value}'",
            range.start(),
            range.end()
        )
    };
    let number: T = value.trim().parse().map_err(|_| what())?;
    if range.contains(&number) {
        Ok(number)
    } else {
        Err(what())
    }
}

fn parse_scenario(value: &str) -> Result<Scenario, String> {
    Scenario::ALL
        .into_iter()
        .find(|s| s.name() == value.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!(
                "--scenario must be one of {}, got '{value}'",
                names.join(", ")
            )
        })
}

fn init_logging() {
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(error) => {
            if std::env::var_os("RUST_LOG").is_some() {
                eprintln!("cluster: ignoring RUST_LOG ({error}); logging at warn");
            }
            tracing_subscriber::EnvFilter::new("warn")
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(options: Options) -> Result<String, String> {
    let started = Instant::now();
    let Options {
        members,
        messages,
        scenario,
    } = options;
    println!(
        "cohort cluster demo: {LOCATORS} locators and {members} member{}, {messages} note(s) \
         per pair, scenario {}",
        plural(members),
        scenario.name()
    );
    let setup = Setup::new()?;
    let mut log = ViewLog::start();
    let mut ledger = Ledger::new();

    // 1. Everyone starts at once; the view log prints each view as it is installed.
    heading(&format!(
        "1. Starting {LOCATORS} locators and {members} member{} at once",
        plural(members)
    ));
    println!(
        "   locators at {}; working directory {}",
        join_display(&setup.locators),
        setup.dir.path().display()
    );
    let mut configs = Vec::with_capacity(LOCATORS + members);
    for (i, address) in setup.locators.iter().enumerate() {
        let name = format!("locator-{}", i + 1);
        configs.push(setup.config(&name, MemberKind::Locator, Some(*address))?);
    }
    for i in 0..members {
        configs.push(setup.config(&member_name(i), MemberKind::Member, None)?);
    }
    if scenario == Scenario::RollingUpgrade {
        println!("   every node is an old member: the legacy UDP protocol (v1), not encrypted");
        for config in &mut configs {
            config.protocol = Protocol::Legacy;
        }
    }
    let mut nodes = start_all(configs, &log).await?;
    let formed = log.agreement(&nodes, LOCATORS + members).await?;
    println!(
        "\n   All {} nodes report view {} with all {} in it (checked with each node's \
         member.view()).",
        nodes.len(),
        formed.id(),
        formed.len()
    );
    println!(
        "   The locators persisted it: {}",
        persisted_views(setup.dir.path())?
    );

    // 2. Notes between every pair, all at once.
    heading(&format!(
        "2. Each node sends every other node {messages} note(s) (one send, many recipients)"
    ));
    let sent = send_round(&mut nodes, messages, &mut ledger, |_, _| true)?;
    let took = wait_delivered(&nodes, &ledger).await?;
    print_delivery(&nodes, &ledger);
    println!(
        "   {sent} notes arrived, each exactly once and in order per sender, within {:.0} ms",
        took.as_secs_f64() * 1000.0
    );

    // 3. The scenario.
    let mut gone = Vec::new();
    let story = match scenario {
        Scenario::Leave | Scenario::CoordinatorLeaves => {
            let leaver = choose_leaver(&nodes, &formed, scenario)?;
            depart(&mut nodes, leaver, &mut log, &mut ledger, &mut gone).await?
        }
        Scenario::JoinLate => {
            let name = member_name(members);
            let config = setup.config(&name, MemberKind::Member, None)?;
            join_late(&mut nodes, config, messages, &mut log, &mut ledger).await?
        }
        Scenario::RollingUpgrade => {
            let upgrade = Upgrade {
                setup: &setup,
                messages,
            };
            upgrade
                .run(&mut nodes, &mut log, &mut ledger, &mut gone)
                .await?
        }
    };

    // 4. Everybody leaves.
    everybody_leaves(nodes, &mut log, &mut gone).await?;
    log.finish().await?;
    let received = final_check(gone, &ledger).await?;
    let dir = setup.dir.path().display().to_string();
    setup.dir.remove()?;
    println!("   removed the working directory {dir}");

    Ok(format!(
        "\nOK: {} nodes formed view {} together, exchanged {received} notes (each once, in \
         order), {story}, and all left gracefully; {:.2} s in all",
        formed.len(),
        formed.id(),
        started.elapsed().as_secs_f64()
    ))
}

/// What every node's configuration shares: the CA, the working directory, the locators.
struct Setup {
    ca: CertificateAuthority,
    dir: WorkDir,
    locators: Vec<SocketAddr>,
}

impl Setup {
    fn new() -> Result<Setup, String> {
        let ca = CertificateAuthority::ephemeral()
            .map_err(|e| format!("cannot generate the cluster CA: {e}"))?;
        let mut locators = (0..LOCATORS)
            .map(|_| reserve_port())
            .collect::<Result<Vec<_>, _>>()?;
        // Locators started together let the smallest address found the cluster: call that
        // one locator-1.
        locators.sort();
        Ok(Setup {
            ca,
            dir: WorkDir::create()?,
            locators,
        })
    }

    /// A node's configuration: its own certificate, every locator listed, the shared
    /// working directory; `bind` for a locator's reserved address.
    fn config(
        &self,
        name: &str,
        kind: MemberKind,
        bind: Option<SocketAddr>,
    ) -> Result<MemberConfig, String> {
        let request = MemberRequest::new(name, CERT_VALIDITY)
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
            .dns("localhost");
        let issued = self
            .ca
            .issue(&request)
            .map_err(|e| format!("cannot issue a certificate for {name}: {e}"))?;
        let tls = TlsSettings::from_pem(
            self.ca.certificate_pem(),
            issued.certificate_pem,
            issued.private_key_pem,
        );
        let mut config = MemberConfig::new(tls);
        config.identity.name = name.to_owned();
        config.identity.kind = kind;
        if let Some(bind) = bind {
            config.identity.bind = bind;
        }
        config.locators = self.locators.clone();
        config.working_dir = Some(self.dir.path().to_owned());
        Ok(config)
    }
}

/// A free loopback UDP port: bound, noted and released, for a locator to bind later.
fn reserve_port() -> Result<SocketAddr, String> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map_err(|e| format!("cannot reserve a loopback UDP port: {e}"))
}

/// A fresh temporary directory, removed when dropped (so also on a failed run).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "cohort-cluster-example-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Removes the directory now, reporting a failure.
    fn remove(mut self) -> Result<(), String> {
        // Taken, so that Drop has nothing left to do.
        let path = std::mem::take(&mut self.0);
        std::fs::remove_dir_all(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The view files the locators wrote, by name.
fn persisted_views(dir: &Path) -> Result<String, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "no locator persisted its view in {}",
            dir.display()
        ));
    }
    Ok(names.join(", "))
}

fn member_name(i: usize) -> String {
    match NAMES.get(i) {
        Some(name) => (*name).to_owned(),
        None => format!("member-{}", i + 1),
    }
}

// ---- nodes ----

/// One running node: the member, and the task checking the notes it receives.
struct Node {
    name: String,
    member: Member,
    inbox: Inbox,
    /// The sequence number of this node's next note.
    next_seq: u32,
}

/// A node that has left: what it received.
struct Gone {
    name: String,
    inbox: Inbox,
}

/// The receive task of one node and what it has received so far.
struct Inbox {
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

/// Starts every configuration at once; returns the nodes in the order given. Each node is
/// followed by the view log and subscribed to notes as soon as it is in a view.
async fn start_all(configs: Vec<MemberConfig>, log: &ViewLog) -> Result<Vec<Node>, String> {
    let began = Instant::now();
    let mut starting = JoinSet::new();
    for (index, config) in configs.into_iter().enumerate() {
        starting.spawn(async move {
            let name = config.identity.name.clone();
            (index, name, Member::start(config).await)
        });
    }
    let mut started = Vec::new();
    while let Some(joined) = starting.join_next().await {
        let (index, name, result) = joined.map_err(|e| format!("a start task failed: {e}"))?;
        let member = result.map_err(|e| format!("{name} did not start: {e}"))?;
        println!(
            "   {name} ({}) is in view {} after {:.2} s",
            member.id().kind(),
            member.view().id(),
            began.elapsed().as_secs_f64()
        );
        started.push((index, adopt(name, member, log)?));
    }
    started.sort_by_key(|(index, _)| *index);
    Ok(started.into_iter().map(|(_, node)| node).collect())
}

/// Starts following a node that is in a view, and subscribes it to notes (before anyone
/// sends one: a message whose tag has no subscriber is dropped by the receiving member).
fn adopt(name: String, member: Member, log: &ViewLog) -> Result<Node, String> {
    let notes = member
        .subscribe::<Note>()
        .map_err(|e| format!("{name} cannot subscribe to notes: {e}"))?;
    log.follow(&name, &member);
    let (progress_tx, progress) = watch::channel(Progress::default());
    let task = tokio::spawn(receive(notes, progress_tx));
    Ok(Node {
        name,
        member,
        inbox: Inbox { progress, task },
        next_seq: 0,
    })
}

/// Leaves gracefully; returns what the node received and how long the leave took.
async fn leave(node: Node) -> Result<(Gone, Duration), String> {
    let Node {
        name,
        member,
        inbox,
        ..
    } = node;
    let began = Instant::now();
    match tokio::time::timeout(LEAVE_PATIENCE, member.leave()).await {
        Ok(true) => Ok((Gone { name, inbox }, began.elapsed())),
        Ok(false) => Err(format!(
            "{name} left, but the view without it did not arrive within its leave timeout"
        )),
        Err(_) => Err(format!(
            "{name} did not finish leaving within {LEAVE_PATIENCE:?}"
        )),
    }
}

// ---- the view log ----

/// Prints each view the first time any node reports it, and records which view each node
/// is in, so that the example can wait for agreement without polling.
struct ViewLog {
    reports: mpsc::UnboundedSender<Report>,
    state: watch::Receiver<LogState>,
    printer: JoinHandle<()>,
}

/// What a node's follow task tells the view log.
enum Report {
    View {
        node: String,
        view: View,
        /// Who left or crashed, when the node saw the view installed (not for the view it
        /// was already in when it was first followed).
        departures: Option<Departures>,
    },
    Event {
        node: String,
        text: String,
    },
}

struct Departures {
    left: Vec<MemberId>,
    crashed: Vec<MemberId>,
}

#[derive(Default)]
struct LogState {
    /// The newest view each node has reported.
    latest: BTreeMap<String, View>,
    /// The newest view printed.
    printed: Option<ViewId>,
}

impl LogState {
    /// The view `names` all report, if they report the same one with `size` members and
    /// it has been printed.
    fn agreed(&self, names: &[&str], size: usize) -> Option<&View> {
        let first = self.latest.get(*names.first()?)?;
        let all_there = names
            .iter()
            .all(|name| self.latest.get(*name).is_some_and(|v| v.id() == first.id()));
        let printed = self.printed.is_some_and(|id| id >= first.id());
        (all_there && printed && first.len() == size).then_some(first)
    }
}

impl ViewLog {
    fn start() -> ViewLog {
        let (reports, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(LogState::default());
        let printer = tokio::spawn(print_views(rx, state_tx));
        ViewLog {
            reports,
            state,
            printer,
        }
    }

    /// Reports the node's current view, then every view it installs until it is out.
    fn follow(&self, name: &str, member: &Member) {
        // Subscribe first, then read the current view: nothing installed in between is
        // missed (it may be reported twice, which the log ignores).
        let events = member.events();
        let current = member.view();
        tokio::spawn(follow(
            name.to_owned(),
            current,
            events,
            self.reports.clone(),
        ));
    }

    /// Waits until every one of `nodes` is in the same view of `size` members and that
    /// view has been printed; checks it against each node's `member.view()`.
    async fn agreement(&mut self, nodes: &[Node], size: usize) -> Result<View, String> {
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let agreed = match tokio::time::timeout(
            PATIENCE,
            self.state.wait_for(|s| s.agreed(&names, size).is_some()),
        )
        .await
        {
            // Cloned at once: holding the borrowed state would block the printer.
            Ok(Ok(state)) => state.agreed(&names, size).cloned(),
            _ => None,
        };
        let summary = || {
            nodes
                .iter()
                .map(|n| {
                    let view = n.member.view();
                    format!("{} in view {} of {}", n.name, view.id(), view.len())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(view) = agreed else {
            return Err(format!(
                "the {} nodes did not agree on a view of {size} within {PATIENCE:?}: {}",
                nodes.len(),
                summary()
            ));
        };
        if nodes.iter().any(|n| n.member.view() != view) {
            return Err(format!(
                "the nodes reported view {} but their member.view() differ: {}",
                view.id(),
                summary()
            ));
        }
        Ok(view)
    }

    /// Waits (bounded) for the follow tasks to end, which they do when their node is out,
    /// and for the printer to print what they reported.
    async fn finish(self) -> Result<(), String> {
        drop(self.reports);
        tokio::time::timeout(PATIENCE, self.printer)
            .await
            .map_err(|_| format!("the view log did not finish within {PATIENCE:?}"))?
            .map_err(|e| format!("the view log failed: {e}"))
    }
}

async fn follow(
    node: String,
    current: View,
    mut events: broadcast::Receiver<MembershipEvent>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let _ = reports.send(Report::View {
        node: node.clone(),
        view: current,
        departures: None,
    });
    loop {
        let (report, last) = match events.recv().await {
            Ok(MembershipEvent::ViewInstalled {
                view,
                left,
                crashed,
                ..
            }) => {
                let departures = Some(Departures { left, crashed });
                let node = node.clone();
                (
                    Report::View {
                        node,
                        view,
                        departures,
                    },
                    false,
                )
            }
            Ok(MembershipEvent::Left) => (event(&node, "has left the cluster".to_owned()), true),
            Ok(MembershipEvent::ForcedDisconnect { reason }) => {
                (event(&node, format!("was forced out: {reason}")), true)
            }
            Ok(other) => (event(&node, format!("{other:?}")), false),
            Err(RecvError::Lagged(missed)) => (
                event(&node, format!("missed {missed} membership events")),
                false,
            ),
            Err(RecvError::Closed) => break,
        };
        if reports.send(report).is_err() || last {
            break;
        }
    }
}

fn event(node: &str, text: String) -> Report {
    Report::Event {
        node: node.to_owned(),
        text,
    }
}

async fn print_views(mut reports: mpsc::UnboundedReceiver<Report>, state: watch::Sender<LogState>) {
    let mut last: Option<View> = None;
    while let Some(report) = reports.recv().await {
        match report {
            Report::Event { node, text } => println!("   {node} {text}"),
            Report::View {
                node,
                view,
                departures,
            } => {
                let new = last.as_ref().is_none_or(|l| view.id() > l.id());
                if new {
                    print!(
                        "{}",
                        format_view(&view, last.as_ref(), departures.as_ref(), &node)
                    );
                    last = Some(view.clone());
                }
                state.send_modify(|s| {
                    if new {
                        s.printed = Some(view.id());
                    }
                    let newest = s.latest.get(&node).is_none_or(|v| view.id() >= v.id());
                    if newest {
                        s.latest.insert(node, view);
                    }
                });
            }
        }
    }
}

/// A view as a table, oldest member first, with what changed since `previous`.
fn format_view(
    view: &View,
    previous: Option<&View>,
    departures: Option<&Departures>,
    reported_by: &str,
) -> String {
    let name = |m: Option<&MemberId>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
    let since = match previous {
        Some(p) if p.id().0 + 1 < view.id().0 => format!("; changes since view {}", p.id()),
        _ => String::new(),
    };
    let mut out = format!(
        "\n   view {}: {} member{}, coordinator {}, elder {} (first reported by {reported_by}{since})\n",
        view.id(),
        view.len(),
        plural(view.len()),
        name(view.coordinator()),
        name(view.elder()),
    );
    let mut rows = Vec::new();
    for (i, m) in view.members().iter().enumerate() {
        let change = match previous {
            Some(p) if !p.contains(m) => "joined",
            None if view.id() == ViewId(1) => "founded",
            _ => "",
        };
        rows.push(row(&(i + 1).to_string(), m, &role(view, m), change));
    }
    for m in previous.map_or(&[][..], View::members) {
        if view.contains(m) {
            continue;
        }
        let change = match departures {
            Some(d) if d.left.contains(m) => "left",
            Some(d) if d.crashed.contains(m) => "crashed",
            _ => "gone",
        };
        rows.push(row("-", m, "", change));
    }
    let headers = [
        "#", "name", "kind", "version", "address", "uuid", "role", "change",
    ];
    out.push_str(&table(&headers, &rows));
    out
}

fn row(position: &str, m: &MemberId, role: &str, change: &str) -> Vec<String> {
    let uuid = m.uuid().simple().to_string();
    vec![
        position.to_owned(),
        m.name().to_owned(),
        m.kind().to_string(),
        m.version().to_string(),
        m.address().to_string(),
        uuid.chars().take(8).collect(),
        role.to_owned(),
        change.to_owned(),
    ]
}

fn role(view: &View, m: &MemberId) -> String {
    let mut roles = Vec::new();
    if view.coordinator() == Some(m) {
        roles.push("coordinator");
    }
    if view.elder() == Some(m) {
        roles.push("elder");
    }
    roles.join(", ")
}

/// Left-aligned columns, two spaces apart, indented; trailing blanks trimmed.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("     {}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

// ---- notes ----

/// Notes sent so far: receiver name -> sender name -> count.
type Ledger = BTreeMap<String, BTreeMap<String, u32>>;

/// What one node has received so far, kept by its receive task.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// Per sender name: how many notes and the last sequence number.
    heard: BTreeMap<String, Heard>,
    /// The first note received, for people to read.
    first: Option<String>,
    /// Anything that broke a promise: order, once only, identity, priority.
    problems: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Heard {
    count: u32,
    last: Option<u32>,
}

impl Progress {
    fn record(&mut self, envelope: &Envelope<Note>) {
        let note = &envelope.message;
        let sender = envelope.from.name();
        if sender != note.from {
            self.problems.push(format!(
                "a note claiming to be from {} arrived from {sender}",
                note.from
            ));
        }
        if envelope.delivery != Delivery::Reliable(Priority::Normal) {
            self.problems.push(format!(
                "a note from {sender} arrived as {:?}",
                envelope.delivery
            ));
        }
        let heard = self.heard.entry(sender.to_owned()).or_default();
        if let Some(last) = heard.last
            && note.seq <= last
        {
            self.problems.push(format!(
                "note #{} from {sender} arrived after its note #{last}: twice or out of order",
                note.seq
            ));
        }
        heard.last = Some(note.seq);
        heard.count += 1;
        if self.first.is_none() {
            self.first = Some(format!(
                "{:?} from {sender} ({:?})",
                note.text, envelope.delivery
            ));
        }
    }

    fn count_from(&self, sender: &str) -> u32 {
        self.heard.get(sender).map_or(0, |h| h.count)
    }

    fn total(&self) -> u32 {
        self.heard.values().map(|h| h.count).sum()
    }

    /// Everything expected has arrived (perhaps more).
    fn covers(&self, expected: &BTreeMap<String, u32>) -> bool {
        expected
            .iter()
            .all(|(sender, &n)| self.count_from(sender) >= n)
    }

    /// Exactly what was expected arrived, nothing more.
    fn matches(&self, expected: &BTreeMap<String, u32>) -> bool {
        self.covers(expected)
            && self
                .heard
                .iter()
                .all(|(sender, h)| expected.get(sender) == Some(&h.count))
    }

    fn shortfall(&self, expected: &BTreeMap<String, u32>) -> String {
        let mut parts = Vec::new();
        for (sender, &n) in expected {
            let got = self.count_from(sender);
            if got != n {
                parts.push(format!("{got} of {n} from {sender}"));
            }
        }
        for (sender, h) in &self.heard {
            if !expected.contains_key(sender) {
                parts.push(format!("{} unexpected from {sender}", h.count));
            }
        }
        parts.join(", ")
    }
}

async fn receive(mut notes: Subscription<Note>, progress: watch::Sender<Progress>) {
    // The subscription ends (yields `None`) when the member's messenger shuts down.
    while let Some(envelope) = notes.recv().await {
        progress.send_modify(|p| p.record(&envelope));
    }
}

/// Each node sends `count` notes to every other node for which `include(sender,
/// receiver)` holds, one send per note for all of them. Returns the notes sent (counted
/// per recipient).
fn send_round(
    nodes: &mut [Node],
    count: u32,
    ledger: &mut Ledger,
    include: impl Fn(&str, &str) -> bool,
) -> Result<u32, String> {
    let everyone: Vec<MemberId> = nodes.iter().map(|n| n.member.id().clone()).collect();
    let mut sent = 0;
    for node in nodes.iter_mut() {
        let recipients: Vec<MemberId> = everyone
            .iter()
            .filter(|m| *m != node.member.id() && include(&node.name, m.name()))
            .cloned()
            .collect();
        if recipients.is_empty() {
            continue;
        }
        for i in 0..count {
            let text = format!(
                "note {} of {count} from {} to {} node{}",
                i + 1,
                node.name,
                recipients.len(),
                plural(recipients.len())
            );
            let outcome = send_note(node, text, &recipients, ledger)?;
            if !outcome.is_complete() {
                return Err(format!(
                    "{} could not queue a note for everyone: {}",
                    node.name,
                    describe(&outcome)
                ));
            }
            sent += u32::try_from(recipients.len()).unwrap_or(u32::MAX);
        }
    }
    Ok(sent)
}

/// Sends one note and records it in the ledger for the recipients that accepted it.
fn send_note(
    node: &mut Node,
    text: String,
    recipients: &[MemberId],
    ledger: &mut Ledger,
) -> Result<SendOutcome, String> {
    let note = Note {
        from: node.name.clone(),
        seq: node.next_seq,
        text,
    };
    let outcome = node
        .member
        .send(&note, Priority::Normal, recipients)
        .map_err(|e| format!("{} could not send: {e}", node.name))?;
    node.next_seq += 1;
    let refused = |r: &MemberId| outcome.not_in_view.contains(r) || outcome.backlogged.contains(r);
    for recipient in recipients.iter().filter(|r| !refused(r)) {
        *ledger
            .entry(recipient.name().to_owned())
            .or_default()
            .entry(node.name.clone())
            .or_default() += 1;
    }
    Ok(outcome)
}

/// Waits until every node has received everything the ledger says was sent to it (and
/// reports any problem its receive task found). Returns how long that took.
async fn wait_delivered(nodes: &[Node], ledger: &Ledger) -> Result<Duration, String> {
    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let none = BTreeMap::new();
    for node in nodes {
        let expected = ledger.get(&node.name).unwrap_or(&none);
        let mut progress = node.inbox.progress.clone();
        // The borrowed value is dropped at once: holding it would block the receive task.
        let arrived = matches!(
            tokio::time::timeout_at(
                deadline,
                progress.wait_for(|p| p.covers(expected) || !p.problems.is_empty())
            )
            .await,
            Ok(Ok(_))
        );
        let progress = progress.borrow();
        if !progress.problems.is_empty() {
            return Err(format!("{}: {}", node.name, progress.problems.join("; ")));
        }
        if !arrived {
            return Err(format!(
                "{} is still missing notes after {PATIENCE:?}: got {}",
                node.name,
                progress.shortfall(expected)
            ));
        }
    }
    Ok(began.elapsed())
}

fn print_delivery(nodes: &[Node], ledger: &Ledger) {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            let progress = node.inbox.progress.borrow();
            let senders = ledger.get(&node.name).map_or(0, BTreeMap::len);
            vec![
                node.name.clone(),
                progress.total().to_string(),
                senders.to_string(),
                progress.first.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["receiver", "notes", "senders", "first note"], &rows)
    );
}

/// Exactly what was sent arrived at every node, now that all have left and their receive
/// tasks have ended. Returns the number of notes received.
async fn final_check(gone: Vec<Gone>, ledger: &Ledger) -> Result<u32, String> {
    let none = BTreeMap::new();
    let mut received = 0;
    for Gone { name, mut inbox } in gone {
        if tokio::time::timeout(PATIENCE, &mut inbox.task)
            .await
            .is_err()
        {
            return Err(format!("{name}'s receive task did not stop"));
        }
        let progress = inbox.progress.borrow();
        let expected = ledger.get(&name).unwrap_or(&none);
        if !progress.problems.is_empty() {
            return Err(format!("{name}: {}", progress.problems.join("; ")));
        }
        if !progress.matches(expected) {
            return Err(format!(
                "{name} did not receive exactly what was sent to it: {}",
                progress.shortfall(expected)
            ));
        }
        received += progress.total();
    }
    Ok(received)
}

// ---- scenarios ----

/// The node that leaves in the scenario: a member (the third, if there are that many), or
/// the coordinator.
fn choose_leaver(nodes: &[Node], view: &View, scenario: Scenario) -> Result<usize, String> {
    let found = if scenario == Scenario::CoordinatorLeaves {
        let coordinator = view.coordinator();
        nodes
            .iter()
            .position(|n| Some(n.member.id()) == coordinator)
    } else {
        let members: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].member.id().kind() == MemberKind::Member)
            .collect();
        members.get(2).or(members.last()).copied()
    };
    found.ok_or_else(|| format!("no node to leave in view {}", view.id()))
}

/// Node `index` leaves gracefully; the others agree on the view without it, and a send to
/// it is refused as not in the view. Returns what happened, for the summary.
async fn depart(
    nodes: &mut Vec<Node>,
    index: usize,
    log: &mut ViewLog,
    ledger: &mut Ledger,
    gone: &mut Vec<Gone>,
) -> Result<String, String> {
    let before = nodes[index].member.view();
    let node = nodes.remove(index);
    let leaver = node.member.id().clone();
    let was_coordinator = before.coordinator() == Some(&leaver);
    let what = if was_coordinator {
        format!("{leaver}, the coordinator,")
    } else {
        format!("{leaver}")
    };
    heading(&format!("3. {what} leaves gracefully: member.leave()"));
    let (left, took) = leave(node).await?;
    gone.push(left);
    let after = log.agreement(nodes, before.len() - 1).await?;
    println!(
        "\n   {leaver}'s leave() returned true after {:.2} s: view {} without it arrived; \
         the {} others agree on it",
        took.as_secs_f64(),
        after.id(),
        nodes.len()
    );
    if after.contains(&leaver) {
        return Err(format!("{leaver} is still in view {}", after.id()));
    }
    let mut story = format!("{leaver} left (view {})", after.id());
    if was_coordinator {
        let successor = after
            .coordinator()
            .filter(|c| c.kind() == MemberKind::Locator)
            .ok_or_else(|| format!("no locator took over as coordinator in view {}", after.id()))?;
        println!("   coordinator: {leaver} -> {successor} (the oldest remaining locator)");
        story = format!("{leaver} (coordinator) left and {successor} took over");
    }
    send_to_departed(nodes, &leaver, ledger).await?;
    Ok(story)
}

/// A node sends a note to another node and to the one that left: only the first is in
/// the view.
async fn send_to_departed(
    nodes: &mut [Node],
    departed: &MemberId,
    ledger: &mut Ledger,
) -> Result<(), String> {
    let sender = nodes
        .iter()
        .position(|n| n.member.id().kind() == MemberKind::Member)
        .unwrap_or(0);
    let other = (0..nodes.len())
        .find(|&i| i != sender)
        .ok_or("no two nodes left to show a send")?;
    let recipients = [nodes[other].member.id().clone(), departed.clone()];
    let node = &mut nodes[sender];
    let text = format!("a note from {} after {departed} left", node.name);
    let outcome = send_note(node, text, &recipients, ledger)?;
    println!(
        "   {} sends a note to [{}]: {}",
        node.name,
        join_display(&recipients),
        describe(&outcome)
    );
    if outcome.not_in_view != [departed.clone()] || !outcome.backlogged.is_empty() {
        return Err(format!(
            "expected exactly {departed} in SendOutcome::not_in_view, got {outcome:?}"
        ));
    }
    wait_delivered(nodes, ledger).await?;
    println!("   {} received it", recipients[0]);
    Ok(())
}

/// One more member joins the running cluster, and it and everyone else exchange notes.
async fn join_late(
    nodes: &mut Vec<Node>,
    config: MemberConfig,
    messages: u32,
    log: &mut ViewLog,
    ledger: &mut Ledger,
) -> Result<String, String> {
    let name = config.identity.name.clone();
    heading(&format!("3. {name} joins the running cluster late"));
    let began = Instant::now();
    let member = Member::start(config)
        .await
        .map_err(|e| format!("{name} did not start: {e}"))?;
    let took = began.elapsed();
    nodes.push(adopt(name.clone(), member, log)?);
    let view = log.agreement(nodes, nodes.len()).await?;
    println!(
        "\n   {name} was admitted in view {} ({:.2} s after start); all {} nodes agree on it",
        view.id(),
        took.as_secs_f64(),
        nodes.len()
    );
    let sent = send_round(nodes, messages, ledger, |sender, receiver| {
        sender == name || receiver == name
    })?;
    wait_delivered(nodes, ledger).await?;
    println!("   {name} and the others exchanged {sent} notes, each once and in order");
    Ok(format!("{name} joined late (view {})", view.id()))
}

/// The `rolling-upgrade` scenario.
struct Upgrade<'a> {
    setup: &'a Setup,
    messages: u32,
}

impl Upgrade<'_> {
    /// Each node in turn (locators first) leaves and comes back as a bridge; then the
    /// legacy sides close and an old member is refused.
    async fn run(
        &self,
        nodes: &mut Vec<Node>,
        log: &mut ViewLog,
        ledger: &mut Ledger,
        gone: &mut Vec<Gone>,
    ) -> Result<String, String> {
        heading(
            "3. Rolling upgrade: each node in turn leaves and comes back as a bridge \
             (version v2: QUIC and the legacy protocol on one port)",
        );
        let mut order: Vec<(String, MemberKind)> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.member.id().kind()))
            .collect();
        order.sort_by_key(|(_, kind)| *kind != MemberKind::Locator);
        for (name, kind) in &order {
            self.step(nodes, name, *kind, log, ledger, gone).await?;
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !nodes.iter().all(|n| legacy_closed(&n.member)) {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "a bridge kept its legacy side open for {PATIENCE:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "\n   No v1 member is left: every one of the {} bridges closed its legacy side.",
            nodes.len()
        );
        let mut late = self
            .setup
            .config("old-latecomer", MemberKind::Member, None)?;
        late.protocol = Protocol::Legacy;
        match Member::start(late).await {
            Err(StartError::Refused { by, reason }) => {
                println!("   An old member trying to join now is refused by {by}: {reason}");
            }
            Err(other) => {
                return Err(format!(
                    "an old member failed to join, but not with a refusal: {other}"
                ));
            }
            Ok(member) => {
                return Err(format!(
                    "an old member joined after the upgrade: {}",
                    member.id()
                ));
            }
        }
        Ok(format!(
            "all {} nodes were upgraded from the legacy protocol to QUIC one at a time",
            order.len()
        ))
    }

    /// Node `name` leaves, comes back as a bridge at the same address (a locator) or a new
    /// one (a member), and exchanges notes with everyone.
    async fn step(
        &self,
        nodes: &mut Vec<Node>,
        name: &str,
        kind: MemberKind,
        log: &mut ViewLog,
        ledger: &mut Ledger,
        gone: &mut Vec<Gone>,
    ) -> Result<(), String> {
        let index = nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| format!("{name} is not running"))?;
        let node = nodes.remove(index);
        let (next_seq, old) = (node.next_seq, node.member.id().clone());
        let bind = (kind == MemberKind::Locator).then(|| old.address());
        let (mut left, _) = leave(node).await?;
        // What the old incarnation received is checked on its own at the end.
        left.name = format!("{name} ({})", old.version());
        if let Some(row) = ledger.remove(name) {
            ledger.insert(left.name.clone(), row);
        }
        gone.push(left);
        log.agreement(nodes, nodes.len()).await?;

        let mut config = self.setup.config(name, kind, bind)?;
        config.protocol = Protocol::Bridge;
        let member = Member::start(config)
            .await
            .map_err(|e| format!("{name} did not come back as a bridge: {e}"))?;
        let mut node = adopt(name.to_owned(), member, log)?;
        // Its notes go on numbering from where the old incarnation stopped.
        node.next_seq = next_seq;
        let new = node.member.id().clone();
        nodes.insert(index, node);
        let view = log.agreement(nodes, nodes.len()).await?;
        let sent = send_round(nodes, self.messages, ledger, |sender, receiver| {
            sender == name || receiver == name
        })?;
        wait_delivered(nodes, ledger).await?;
        let old_members = view
            .members()
            .iter()
            .filter(|m| m.version() == old.version())
            .count();
        println!(
            "\n   {name} is back as a bridge ({} at {}) in view {}; it exchanged {sent} notes \
             with the others, each once and in order ({old_members} still on v1, reached over \
             the legacy protocol; the rest over QUIC)",
            new.version(),
            new.address(),
            view.id()
        );
        Ok(())
    }
}

fn legacy_closed(member: &Member) -> bool {
    let messenger = member.messenger();
    match messenger.secondary_open() {
        Some(open) => !open,
        // QUIC alone has nothing to close; the legacy protocol alone never closes.
        None => messenger.quic().is_some(),
    }
}

/// The members leave together, then the locators one by one, the coordinator last (so
/// that no view change waits for a hand-over).
async fn everybody_leaves(
    nodes: Vec<Node>,
    log: &mut ViewLog,
    gone: &mut Vec<Gone>,
) -> Result<(), String> {
    heading("4. Everybody leaves: the members together, then the locators, coordinator last");
    let (mut locators, members): (Vec<Node>, Vec<Node>) = nodes
        .into_iter()
        .partition(|n| n.member.id().kind() == MemberKind::Locator);
    if !members.is_empty() {
        let names: Vec<String> = members.iter().map(|n| n.name.clone()).collect();
        let mut leaving = JoinSet::new();
        for node in members {
            leaving.spawn(leave(node));
        }
        while let Some(joined) = leaving.join_next().await {
            let (left, _) = joined.map_err(|e| format!("a leave task failed: {e}"))??;
            gone.push(left);
        }
        let view = log.agreement(&locators, locators.len()).await?;
        println!(
            "\n   {} left; the locators are in view {}",
            names.join(", "),
            view.id()
        );
    }
    let coordinator = locators
        .first()
        .and_then(|n| n.member.view().coordinator().cloned());
    locators.sort_by_key(|n| Some(n.member.id()) == coordinator.as_ref());
    while !locators.is_empty() {
        let (left, _) = leave(locators.remove(0)).await?;
        let name = left.name.clone();
        gone.push(left);
        if locators.is_empty() {
            println!("   {name} left last");
        } else {
            let view = log.agreement(&locators, locators.len()).await?;
            println!("\n   {name} left; view {}", view.id());
        }
    }
    Ok(())
}

// ---- output ----

fn describe(outcome: &SendOutcome) -> String {
    format!(
        "SendOutcome {{ not_in_view: [{}], backlogged: [{}] }}",
        join_display(&outcome.not_in_view),
        join_display(&outcome.backlogged)
    )
}

fn join_display<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn heading(text: &str) {
    println!("\n== {text}");
}
