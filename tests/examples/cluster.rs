//! A small cohort cluster in one process: the first thing to run after cloning.
//!
//! ```text
//! cargo run --example cluster
//! cargo run --example cluster -- --members 5 --messages 10
//! RUST_LOG=cohort_transport=debug cargo run --example cluster
//! ```
//!
//! Until the membership layer exists this is a tour of the transport on its embedded
//! defaults. It shows, in order:
//!
//! 1. **Security.** One in-memory cluster CA issues a certificate per member; every
//!    member trusts that CA only, and every connection is mutual TLS over QUIC.
//! 2. **Views.** Each member binds a [`QuicMessenger`] on an ephemeral loopback port and
//!    installs the same [`View`]: the ordered member list that says whom it may talk to.
//! 3. **Reliable messages.** Every member sends every other member a few `Note`s on each
//!    application priority (High, Normal, Bulk; the first Bulk note carries a 1 MiB
//!    attachment). Each priority has its own ordered QUIC stream, so the large Bulk note
//!    does not hold back High and Normal notes sent after it. Receivers check that
//!    everything arrived exactly once and in order per (sender, priority).
//! 4. **Datagrams.** Once a pair is connected, `Ping`s go out as QUIC datagrams. They are
//!    unreliable by contract, so the example reports how many arrived instead of
//!    requiring all of them.
//! 5. **A view change.** The survivors install a view without "gamma": their connections
//!    to it close, and `send` to it now reports it in [`SendOutcome::not_in_view`].
//! 6. **Graceful shutdown.** [`Messenger::shutdown`] flushes what is queued and closes.
//!
//! How data flows through one member:
//!
//! ```text
//! send(note, priority, [peers]) ─► view check ─► per-peer queue (bounded in bytes)
//!     ─► writer task ─► QUIC stream for that priority ─► peer's reader ─► order check
//!     ─► dispatcher (by message tag) ─► Subscription<Note> ─► this member's `receive` task
//! send_datagram(ping, [peers]) ─► QUIC datagram ─► peer ─► Subscription<Ping>
//! ```
//!
//! Message types are plain serde types with a stable [`Tag`] at or above
//! [`Tag::FIRST_APPLICATION`]; tags below it belong to cohort's own protocols.
//!
//! Exit status: 0 when everything sent reliably arrived in order, 1 when something did not
//! (with the reason on stderr), 2 for a bad command line. Logs go to stderr and are
//! filtered by `RUST_LOG` (default `warn`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_certs::{CertificateAuthority, MemberRequest};
use cohort_transport::{
    Delivery, Envelope, MemberId, Message, Messenger, Priority, QuicConfig, QuicMessenger,
    SendOutcome, Subscription, Tag, TlsSettings, TransportEvent, View, ViewId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const USAGE: &str = "\
Runs a small cohort cluster in this process: an in-memory CA, QUIC members with mutual TLS
on loopback, messages on every priority, datagrams, a view change and a graceful shutdown.

usage: cargo run --example cluster [-- OPTIONS]

options:
  --members N    members in the cluster, 2 to 16 (default 3)
  --messages N   reliable messages per priority per pair, 1 to 1000 (default 3);
                 also the number of datagrams per pair
  -h, --help     show this help

logging: RUST_LOG filters the logs on stderr (default \"warn\"),
         e.g. RUST_LOG=cohort_transport=debug
";

/// Member names; members beyond this list are named `member-N`.
const NAMES: [&str; 16] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi",
];
const MEMBERS_RANGE: std::ops::RangeInclusive<usize> = 2..=16;
const MESSAGES_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;
const DEFAULT_MEMBERS: usize = 3;
const DEFAULT_MESSAGES: u32 = 3;

/// The application priorities (Control belongs to the membership protocol).
const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Bulk];
/// Size of the attachment on each sender's first Bulk note.
const ATTACHMENT_BYTES: usize = 1 << 20;
/// Bound on every wait for something that must happen (connections, reliable delivery).
const PATIENCE: Duration = Duration::from_secs(30);
/// How long to keep listening for datagrams still in flight; they may be lost.
const DATAGRAM_GRACE: Duration = Duration::from_secs(2);
/// How long the removed member waits to hear that its connections were closed.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);
/// Bound on one member's graceful shutdown (it bounds its own flush at 2 s by default).
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);
/// How often bounded waits on a polled condition check it.
const POLL: Duration = Duration::from_millis(5);

/// A reliable application message.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Note {
    /// The sender's name, repeated in the content so the receiver can check it.
    from: String,
    /// The priority it was sent on.
    priority: Priority,
    /// 0, 1, 2, ... per (sender, priority): the order the receiver checks.
    index: u32,
    /// Something for people to read.
    text: String,
    /// Bytes that the receiver checks but does not print.
    attachment: Bytes,
}

impl Message for Note {
    const TAG: Tag = Tag(0x1_1001);
}

/// An unreliable application message, sent as a QUIC datagram.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ping {
    from: String,
    index: u32,
}

impl Message for Ping {
    const TAG: Tag = Tag(0x1_1002);
}

#[derive(Clone, Copy, Debug)]
struct Options {
    members: usize,
    messages: u32,
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
            "--members" | "--messages" => {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => args
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value"))?
                        .into_string()
                        .map_err(|raw| format!("{flag}: value {raw:?} is not valid UTF-8"))?,
                };
                if flag == "--members" {
                    options.members = parse_in_range(&flag, &value, MEMBERS_RANGE)?;
                } else {
                    options.messages = parse_in_range(&flag, &value, MESSAGES_RANGE)?;
                }
            }
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    Ok(Command::Run(options))
}

fn parse_in_range<T>(
    flag: &str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, String>
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

/// One member of the demo cluster: its messenger and the task printing what it receives.
struct Member {
    name: String,
    messenger: QuicMessenger,
    progress: watch::Receiver<Progress>,
    receiver: JoinHandle<()>,
}

impl Member {
    fn id(&self) -> &MemberId {
        self.messenger.local_member()
    }
}

/// What one member has received so far, kept by its receiver task.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// The next index expected per (sender, priority).
    next: BTreeMap<(String, Priority), u32>,
    /// Reliable notes received.
    reliable: usize,
    /// Payload bytes of the reliable notes received (text and attachment).
    reliable_bytes: usize,
    /// Datagrams received per sender.
    datagrams: BTreeMap<String, u32>,
    /// Anything that broke the transport's promises (order, integrity, identity).
    problems: Vec<String>,
}

impl Progress {
    fn datagram_total(&self) -> usize {
        self.datagrams.values().map(|&n| n as usize).sum()
    }
}

async fn run(options: Options) -> Result<String, String> {
    let started = Instant::now();
    println!(
        "cohort cluster demo: {} members, {} message(s) per priority per pair",
        options.members, options.messages
    );
    let Options {
        members: count,
        messages,
    } = options;
    let names: Vec<String> = (0..count)
        .map(|i| match NAMES.get(i) {
            Some(name) => (*name).to_owned(),
            None => format!("member-{}", i + 1),
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);

    // 1. One CA for the cluster; each member gets its own certificate from it.
    heading(&format!(
        "1. Starting {count} members on loopback, each with a certificate from one in-memory CA"
    ));
    let ca = CertificateAuthority::ephemeral()
        .map_err(|e| format!("cannot generate the cluster CA: {e}"))?;
    let mut members = Vec::with_capacity(count);
    for name in &names {
        let request = MemberRequest::new(name.as_str(), Duration::from_secs(24 * 3600))
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let issued = ca
            .issue(&request)
            .map_err(|e| format!("cannot issue a certificate for {name}: {e}"))?;
        let tls = TlsSettings::from_pem(
            ca.certificate_pem(),
            issued.certificate_pem,
            issued.private_key_pem,
        )
        .load()
        .map_err(|e| format!("cannot load TLS for {name}: {e}"))?;
        let config = QuicConfig {
            name: name.clone(),
            ..QuicConfig::default()
        };
        let messenger = QuicMessenger::bind(config, &tls)
            .map_err(|e| format!("cannot start member {name}: {e}"))?;
        // Subscribe before anything is sent: a message whose tag has no subscriber is
        // dropped (and counted) by the receiving member.
        let notes = messenger
            .subscribe::<Note>()
            .map_err(|e| format!("{name} cannot subscribe to notes: {e}"))?;
        let pings = messenger
            .subscribe::<Ping>()
            .map_err(|e| format!("{name} cannot subscribe to pings: {e}"))?;
        let (progress_tx, progress) = watch::channel(Progress::default());
        let receiver = tokio::spawn(receive(name.clone(), width, notes, pings, progress_tx));
        members.push(Member {
            name: name.clone(),
            messenger,
            progress,
            receiver,
        });
    }

    // 2. Everyone installs the same view: the members, oldest first.
    let view = View::new(ViewId(1), members.iter().map(|m| m.id().clone()));
    for member in &members {
        member.messenger.install_view(view.clone());
    }
    heading("2. Every member installed the same view");
    print_view(&view);

    // 3. Reliable notes on every application priority, to every other member at once.
    heading(&format!(
        "3. Each member sends every other member {messages} note(s) per priority, then \
         {messages} ping datagram(s)"
    ));
    println!(
        "   Each sender's first bulk note carries a {} attachment. Receivers print each",
        human_bytes(ATTACHMENT_BYTES)
    );
    println!("   message as it arrives: receiver <- sender [priority or datagram] content");
    for member in &members {
        let others = others_of(&view, member.id());
        for index in 0..messages {
            for priority in PRIORITIES {
                let attachment = if priority == Priority::Bulk && index == 0 {
                    attachment(ATTACHMENT_BYTES)
                } else {
                    Bytes::new()
                };
                let note = Note {
                    from: member.name.clone(),
                    priority,
                    index,
                    text: format!(
                        "{priority} note {} of {messages} from {}",
                        index + 1,
                        member.name
                    ),
                    attachment,
                };
                let outcome = member
                    .messenger
                    .send(&note, priority, &others)
                    .map_err(|e| format!("{} could not send: {e}", member.name))?;
                if !outcome.is_complete() {
                    return Err(format!(
                        "{} could not queue a {priority} note for everyone: {outcome:?}",
                        member.name
                    ));
                }
            }
        }
    }

    // Then datagrams, once each pair is connected: a datagram to a member with no
    //    connection yet is dropped by contract, so waiting first gives them a fair chance.
    for member in &members {
        let others = others_of(&view, member.id());
        for peer in &others {
            let what = format!("{} is connected to {}", member.name, peer.name());
            wait_for(&what, PATIENCE, || {
                member
                    .messenger
                    .peer_stats(peer)
                    .is_some_and(|stats| stats.connected)
            })
            .await?;
        }
        for index in 0..messages {
            let ping = Ping {
                from: member.name.clone(),
                index,
            };
            member
                .messenger
                .send_datagram(&ping, &others)
                .map_err(|e| format!("{} could not send a datagram: {e}", member.name))?;
        }
    }

    // 4. Every member must receive every note sent to it, in order per (sender, priority).
    let peers = count - 1;
    let expected_reliable = peers * PRIORITIES.len() * messages as usize;
    let expected_datagrams = peers * messages as usize;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for member in &mut members {
        let arrived = reached(&mut member.progress, deadline, |p| {
            p.reliable >= expected_reliable || !p.problems.is_empty()
        })
        .await;
        let progress = member.progress.borrow().clone();
        if !progress.problems.is_empty() {
            return Err(format!("{}: {}", member.name, progress.problems.join("; ")));
        }
        let short = missing(&progress, &names, &member.name, messages);
        if !arrived || progress.reliable != expected_reliable || !short.is_empty() {
            return Err(format!(
                "{} received {} of {expected_reliable} notes within {PATIENCE:?}; {}",
                member.name,
                progress.reliable,
                if short.is_empty() {
                    "nothing missing"
                } else {
                    &short
                },
            ));
        }
    }
    // Datagrams may be lost; give the ones in flight a moment, then count.
    let grace = tokio::time::Instant::now() + DATAGRAM_GRACE;
    for member in &mut members {
        // Not arriving in time is reported below, not an error.
        reached(&mut member.progress, grace, |p| {
            p.datagram_total() >= expected_datagrams
        })
        .await;
    }
    heading("4. Delivery check");
    let mut reliable_bytes = 0;
    let mut datagrams_arrived = 0;
    for member in &members {
        let progress = member.progress.borrow();
        reliable_bytes += progress.reliable_bytes;
        datagrams_arrived += progress.datagram_total();
        println!(
            "   {:<width$}  {} of {expected_reliable} notes, in order per sender and priority; \
             {} of {expected_datagrams} datagrams arrived",
            member.name,
            progress.reliable,
            progress.datagram_total()
        );
        if progress.datagram_total() < expected_datagrams {
            // Where the missing ones went, as far as the counters can tell.
            let mut not_sent = 0;
            let mut received = 0;
            for sender in members.iter().filter(|m| m.id() != member.id()) {
                if let Some(stats) = sender.messenger.peer_stats(member.id()) {
                    not_sent += stats.datagrams_dropped;
                }
                if let Some(stats) = member.messenger.peer_stats(sender.id()) {
                    received += stats.datagrams_received;
                }
            }
            let full = member.messenger.dispatch_stats().dropped_full;
            println!(
                "   {:<width$}  (unreliable: {not_sent} dropped before sending, {received} reached {}, \
                 {full} dropped by its full subscription queue)",
                "", member.name
            );
        }
    }

    // 5. A view change: the survivors install a view without gamma (or without the last
    //    member of a two-member cluster).
    let removed_at = 2.min(count - 1);
    let removed = members[removed_at].id().clone();
    let survivors: Vec<MemberId> = view
        .members()
        .iter()
        .filter(|m| **m != removed)
        .cloned()
        .collect();
    let new_view = View::new(ViewId(2), survivors.clone());
    heading(&format!(
        "5. View change: the remaining members install view 2 without {removed}"
    ));
    let mut removed_events = members[removed_at].messenger.events();
    for member in members.iter().filter(|m| *m.id() != removed) {
        member.messenger.install_view(new_view.clone());
    }
    // The removed member hears its connections close (a real membership layer would also
    // tell it about the new view; here it keeps view 1).
    let mut closed = 0;
    let listen_until = tokio::time::Instant::now() + DISCONNECT_GRACE;
    while closed < survivors.len() {
        match tokio::time::timeout_at(listen_until, removed_events.recv()).await {
            Ok(Ok(TransportEvent::PeerDisconnected { member, reason })) => {
                closed += 1;
                println!("   {removed}: connection to {member} closed ({reason})");
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    println!("   ({removed} itself keeps view 1: telling it is the membership layer's job)");
    if closed < survivors.len() {
        println!(
            "   {removed}: heard {closed} of {} connections close within {DISCONNECT_GRACE:?}",
            survivors.len()
        );
    }

    let first = &members[0];
    let mut recipients: Vec<MemberId> = survivors
        .iter()
        .filter(|m| *m != first.id())
        .take(1)
        .cloned()
        .collect();
    recipients.push(removed.clone());
    let note = Note {
        from: first.name.clone(),
        priority: Priority::Normal,
        index: messages,
        text: format!("normal note from {} after the view change", first.name),
        attachment: Bytes::new(),
    };
    let outcome = first
        .messenger
        .send(&note, Priority::Normal, &recipients)
        .map_err(|e| format!("{} could not send after the view change: {e}", first.name))?;
    println!(
        "   {} sends a note to [{}]: {}",
        first.name,
        join_names(&recipients),
        describe(&outcome, &recipients)
    );
    println!("   SendOutcome = {outcome:?}");
    if outcome.not_in_view != [removed.clone()] || !outcome.backlogged.is_empty() {
        return Err(format!(
            "expected exactly {removed} to be reported as not in the view, got {outcome:?}"
        ));
    }
    for receiver in recipients.iter().filter(|m| **m != removed) {
        let member = members
            .iter_mut()
            .find(|m| m.id() == receiver)
            .expect("every recipient is one of the members");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let arrived = reached(&mut member.progress, deadline, |p| {
            p.reliable > expected_reliable || !p.problems.is_empty()
        })
        .await;
        if !arrived || !member.progress.borrow().problems.is_empty() {
            return Err(format!(
                "{} did not receive the note sent after the view change ({})",
                member.name,
                member.progress.borrow().problems.join("; ")
            ));
        }
    }
    println!();
    print_view(&new_view);

    // 6. Graceful shutdown: each member flushes what it has queued and closes.
    heading("6. Shutting every member down");
    let shutdown_started = Instant::now();
    let shutdowns: Vec<_> = members
        .iter()
        .map(|m| {
            let messenger = m.messenger.clone();
            tokio::spawn(async move {
                tokio::time::timeout(SHUTDOWN_PATIENCE, messenger.shutdown())
                    .await
                    .is_ok()
            })
        })
        .collect();
    for (member, shutdown) in members.iter().zip(shutdowns) {
        if !matches!(shutdown.await, Ok(true)) {
            return Err(format!(
                "{} did not shut down within {SHUTDOWN_PATIENCE:?}",
                member.name
            ));
        }
    }
    // Subscriptions end when their messenger shuts down, which ends the receiver tasks.
    for member in members.iter_mut() {
        if tokio::time::timeout(PATIENCE, &mut member.receiver)
            .await
            .is_err()
        {
            return Err(format!("{}'s receiver did not stop", member.name));
        }
    }
    // Nothing more than what was sent, and no late problem.
    for member in &members {
        let progress = member.progress.borrow();
        let extra = usize::from(recipients.contains(member.id()) && *member.id() != removed);
        if progress.reliable != expected_reliable + extra || !progress.problems.is_empty() {
            return Err(format!(
                "{} ended with {} notes where {} were sent to it ({})",
                member.name,
                progress.reliable,
                expected_reliable + extra,
                progress.problems.join("; ")
            ));
        }
    }
    println!(
        "   {count} members shut down in {:.2} s",
        shutdown_started.elapsed().as_secs_f64()
    );

    Ok(format!(
        "\nOK: {count} members exchanged {} reliable notes ({}) in order and {datagrams_arrived} \
         of {} datagrams, moved from view 1 to view 2 without {removed}, and shut down; {:.2} s \
         in all",
        expected_reliable * count + recipients.iter().filter(|m| **m != removed).count(),
        human_bytes(reliable_bytes),
        expected_datagrams * count,
        started.elapsed().as_secs_f64()
    ))
}

/// One received message of either type.
enum Received {
    Note(Envelope<Note>),
    Ping(Envelope<Ping>),
}

/// Prints what a member receives as it arrives and checks it against what was sent.
async fn receive(
    me: String,
    width: usize,
    mut notes: Subscription<Note>,
    mut pings: Subscription<Ping>,
    progress: watch::Sender<Progress>,
) {
    loop {
        // Both subscriptions end (yield `None`) when the messenger shuts down.
        let received = tokio::select! {
            note = notes.recv() => note.map(Received::Note),
            ping = pings.recv() => ping.map(Received::Ping),
        };
        match received {
            Some(Received::Note(envelope)) => {
                let (line, problems) = check_note(&envelope);
                let note = envelope.message;
                println!(
                    "   {me:>width$} <- {:<width$} [{:<8}] {line}",
                    note.from,
                    note.priority.to_string()
                );
                progress.send_modify(|p| {
                    let next = p
                        .next
                        .entry((note.from.clone(), note.priority))
                        .or_insert(0);
                    if note.index != *next {
                        p.problems.push(format!(
                            "{} note {} from {} arrived where {} was expected",
                            note.priority, note.index, note.from, *next
                        ));
                    }
                    *next = note.index + 1;
                    p.reliable += 1;
                    p.reliable_bytes += note.text.len() + note.attachment.len();
                    p.problems.extend(problems);
                });
            }
            Some(Received::Ping(envelope)) => {
                let ping = envelope.message;
                println!(
                    "   {me:>width$} <- {:<width$} [datagram] ping {} from {}",
                    envelope.from.name(),
                    ping.index + 1,
                    ping.from
                );
                progress.send_modify(|p| *p.datagrams.entry(ping.from).or_insert(0) += 1);
            }
            None => break,
        }
    }
}

/// What to print for a received note, and anything wrong with it.
fn check_note(envelope: &Envelope<Note>) -> (String, Vec<String>) {
    let note = &envelope.message;
    let mut problems = Vec::new();
    if envelope.from.name() != note.from {
        problems.push(format!(
            "a note claiming to be from {} arrived from {}",
            note.from, envelope.from
        ));
    }
    if envelope.delivery != Delivery::Reliable(note.priority) {
        problems.push(format!(
            "a {} note from {} arrived as {:?}",
            note.priority, note.from, envelope.delivery
        ));
    }
    if note.attachment.is_empty() {
        return (note.text.clone(), problems);
    }
    let intact = note.attachment == attachment(note.attachment.len());
    if !intact {
        problems.push(format!("the attachment from {} is corrupted", note.from));
    }
    let line = format!(
        "{} + {} attachment, {}",
        note.text,
        human_bytes(note.attachment.len()),
        if intact { "intact" } else { "CORRUPTED" }
    );
    (line, problems)
}

/// The view's members other than `me`.
fn others_of(view: &View, me: &MemberId) -> Vec<MemberId> {
    view.members()
        .iter()
        .filter(|m| *m != me)
        .cloned()
        .collect()
}

/// Which (sender, priority) streams are short, for a failure message; empty if none.
fn missing(progress: &Progress, names: &[String], me: &str, messages: u32) -> String {
    let mut short = Vec::new();
    for sender in names.iter().filter(|n| *n != me) {
        for priority in PRIORITIES {
            let got = progress
                .next
                .get(&(sender.clone(), priority))
                .copied()
                .unwrap_or(0);
            if got < messages {
                short.push(format!("{got} of {messages} {priority} from {sender}"));
            }
        }
    }
    if short.is_empty() {
        String::new()
    } else {
        format!("got only {}", short.join(", "))
    }
}

/// Waits until a member's progress satisfies `condition`, until `deadline` at the latest;
/// false if it did not (or the member's receiver stopped first).
async fn reached(
    progress: &mut watch::Receiver<Progress>,
    deadline: tokio::time::Instant,
    condition: impl FnMut(&Progress) -> bool,
) -> bool {
    // The borrowed value is dropped here at once: holding it would block the receiver task.
    matches!(
        tokio::time::timeout_at(deadline, progress.wait_for(condition)).await,
        Ok(Ok(_))
    )
}

/// Waits until `condition` holds, checking it every few milliseconds, for at most `limit`.
async fn wait_for(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting until {what}"));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn print_view(view: &View) {
    let name = |m: Option<&MemberId>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
    println!(
        "   view {}: {} member{}, coordinator {}, elder {}",
        view.id(),
        view.len(),
        if view.len() == 1 { "" } else { "s" },
        name(view.coordinator()),
        name(view.elder())
    );
    let width = view
        .members()
        .iter()
        .map(|m| m.name().len())
        .chain(["name".len()])
        .max()
        .unwrap_or(0);
    println!(
        "   {:<width$}  {:<7}  {:<8}  {:<21}  uuid",
        "name", "kind", "protocol", "address"
    );
    for m in view.members() {
        let uuid = m.uuid().simple().to_string();
        println!(
            "   {:<width$}  {:<7}  {:<8}  {:<21}  {}",
            m.name(),
            m.kind().to_string(),
            m.version().to_string(),
            m.address().to_string(),
            &uuid[..8]
        );
    }
}

fn describe(outcome: &SendOutcome, recipients: &[MemberId]) -> String {
    let refused: Vec<&MemberId> = outcome
        .not_in_view
        .iter()
        .chain(&outcome.backlogged)
        .collect();
    let accepted: Vec<MemberId> = recipients
        .iter()
        .filter(|r| !refused.contains(r))
        .cloned()
        .collect();
    let mut parts = Vec::new();
    if !accepted.is_empty() {
        parts.push(format!("queued for {}", join_names(&accepted)));
    }
    if !outcome.not_in_view.is_empty() {
        parts.push(format!(
            "not in the view: {}",
            join_names(&outcome.not_in_view)
        ));
    }
    if !outcome.backlogged.is_empty() {
        parts.push(format!("backlogged: {}", join_names(&outcome.backlogged)));
    }
    parts.join("; ")
}

fn join_names(members: &[MemberId]) -> String {
    members
        .iter()
        .map(MemberId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn heading(text: &str) {
    println!("\n== {text}");
}

/// A recognisable attachment of `len` bytes, so the receiver can check it arrived intact.
fn attachment(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn human_bytes(bytes: usize) -> String {
    const MIB: f64 = (1 << 20) as f64;
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}
