//! [`Member`]: the tokio driver of [`Gms`] and the public front door.
//!
//! ```text
//! Member::start ─► Transport (QUIC, legacy or bridge, by MemberConfig::protocol)
//!                                      ─► serve FindCoordinator (discovery answers)
//!                                          and FinalCheck (this member's uuid)
//!               ─► discovery rounds (discover.rs) ─► Gms::join(coordinator) or found_cluster
//!               ─► driver task ◄── GmsMessage and Heartbeat subscriptions, Gms timers,
//!                                  commands (leave, suspect), transport events (backlog,
//!                                  unreachable address), final-check results
//!                      │ before each timer: the transport's last-heard times of the
//!                      │ watched members ─► Gms::heard_from
//!                      │ Gms outputs:
//!                      ├─ Send      ─► messenger.send_outside_view (Control priority)
//!                      ├─ Heartbeat ─► messenger.send_datagram
//!                      ├─ Check     ─► task: FinalCheck query over a fresh connection, or
//!                      │               any sign of life, within final_check_timeout (a
//!                      │               few round trips once the port refuses the query)
//!                      └─ Event     ─► view installed: messenger.install_view, view watch,
//!                                      persisted view file (locators), event broadcast
//! ```
//!
//! `start` returns once the driver reports this member in a view, or the reason it never
//! will be. The driver owns the `Gms`; everything the application reads (view, events,
//! counters) is published by it into shared state, so no call on a `Member` waits for it.

mod config;
mod discover;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_legacy_udp::{Bridge, LegacyMessenger};
use cohort_transport::{
    MemberId, MemberKind, Message, Messenger, Priority, SendError, SendOutcome, SubscribeError,
    Subscription, TransportEvent, View,
};
use cohort_transport::{QueryError, QuicMessenger};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::config::{ConfigError, MemberConfig, StartError};
pub use self::transport::{Protocol, Transport};
use crate::gms::{CheckOutcome, Gms, GmsConfig, GmsStats, MembershipEvent, Output};
use crate::messages::{
    DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage, Heartbeat, JoinRejection,
};
use crate::view_file;

/// Membership events buffered for slow subscribers.
const EVENT_CAPACITY: usize = 1024;
/// How often a joiner repeats an unanswered join request.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// One member of a cluster: in a view from the moment [`Member::start`] returns until it
/// leaves, is removed, or is dropped.
///
/// Dropping a `Member` stops it at once, like a crash (no leave, no flush); call
/// [`Member::leave`] to go gracefully.
pub struct Member {
    shared: Arc<Shared>,
    messenger: Transport,
    commands: mpsc::Sender<Command>,
    driver: JoinHandle<()>,
    leave_timeout: Duration,
}

/// What the driver publishes for the application and for discovery answers.
struct Shared {
    me: MemberId,
    /// The installed view; empty until this member is in one.
    view: watch::Sender<View>,
    /// True from admission until the member leaves or is removed.
    active: watch::Sender<bool>,
    events: broadcast::Sender<MembershipEvent>,
    stats: Mutex<GmsStats>,
}

impl Shared {
    fn discovery_answer(&self) -> DiscoveryAnswer {
        let view = Some(self.view.borrow().clone()).filter(|_| *self.active.borrow());
        DiscoveryAnswer {
            responder: self.me.clone(),
            view,
        }
    }
}

enum Command {
    Leave(oneshot::Sender<bool>),
    Suspect(MemberId, String),
}

impl Member {
    /// Binds the member's socket, finds the cluster through the locators (or founds it,
    /// for a locator that finds none) and joins it. Returns once this member is in a view,
    /// or with the reason it could not get into one within the join timeout.
    pub async fn start(config: MemberConfig) -> Result<Member, StartError> {
        config.validate()?;
        let deadline = Instant::now() + config.join_timeout;
        let tls = config.tls.load()?;
        let messenger = match config.protocol {
            Protocol::Quic => Transport::Quic(QuicMessenger::bind(config.quic(), &tls)?),
            Protocol::Legacy => Transport::Legacy(LegacyMessenger::bind(config.legacy())?),
            Protocol::Bridge => {
                let quic = QuicMessenger::bind(config.quic(), &tls)?;
                Transport::Bridge(Bridge::new(quic, config.legacy())?)
            }
        };
        let me = messenger.local_member().clone();
        let subscription = messenger
            .subscribe::<GmsMessage>()
            .map_err(|_| StartError::Stopped)?;
        let heartbeats = messenger
            .subscribe::<Heartbeat>()
            .map_err(|_| StartError::Stopped)?;
        let transport_events = messenger.events();
        let shared = Arc::new(Shared {
            me: me.clone(),
            view: watch::Sender::new(View::empty()),
            active: watch::Sender::new(false),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            stats: Mutex::new(GmsStats::default()),
        });
        let answering = shared.clone();
        messenger.serve::<FindCoordinator>(move |query, from| {
            tracing::trace!(asker = ?query.asker, %from, "discovery query");
            answering.discovery_answer()
        });
        let uuid = me.uuid();
        messenger.serve::<FinalCheck>(move |_, _| uuid);

        let view_file = (config.kind == MemberKind::Locator && config.persist_view)
            .then(|| view_file::path_for(&config.working_dir, me.address().port()));
        let persisted = view_file.as_deref().and_then(|path| {
            view_file::read(path)
                .inspect_err(|error| tracing::warn!(%error, "ignoring the persisted view"))
                .ok()
                .flatten()
        });
        let targets = discover::targets(&config.locators, persisted.as_ref(), &me);
        let decision = discover::run(
            &messenger,
            &me,
            &targets,
            (
                config.discovery_interval,
                config.transport.handshake_timeout,
            ),
            deadline,
        )
        .await;

        let now = Instant::now();
        let gms_config = GmsConfig {
            batch_interval: config.batch_interval,
            prepare_timeout: config.member_timeout * 2,
            join_retry: JOIN_RETRY,
            join_timeout: deadline.saturating_duration_since(now),
            leave_timeout: config.leave_timeout,
            member_timeout: config.member_timeout,
            partition_detection: config.partition_detection,
            ..GmsConfig::default()
        };
        let mut gms = Gms::new(me.clone(), gms_config, config.authenticator.clone());
        let coordinator = match decision {
            Ok(discover::Found::Cluster(coordinator)) => {
                tracing::info!(member = ?me, ?coordinator, "joining");
                gms.join(
                    now.into_std(),
                    coordinator.clone(),
                    config.credentials.clone(),
                );
                Some(coordinator)
            }
            Ok(discover::Found::Nothing) => {
                tracing::info!(member = ?me, "no cluster found: founding one");
                gms.found_cluster(now.into_std());
                None
            }
            Err(discover::Failure::Silence(last_error)) => {
                messenger.shutdown().await;
                return Err(StartError::NoLocator {
                    locators: targets,
                    waited: config.join_timeout,
                    last_error,
                });
            }
            Err(discover::Failure::Refused { by, reason }) => {
                messenger.shutdown().await;
                return Err(StartError::Refused { by, reason });
            }
        };

        let (commands, command_rx) = mpsc::channel(8);
        let (started, started_rx) = oneshot::channel();
        let (check_results, check_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            gms,
            messenger: messenger.clone(),
            shared: shared.clone(),
            view_file,
            started: Some(started),
            coordinator,
            join_timeout: config.join_timeout,
            final_check_timeout: config.final_check_timeout,
            check_results,
            leaving: None,
        };
        let inputs = Inputs {
            messages: subscription,
            heartbeats,
            commands: command_rx,
            checks: check_rx,
            transport: transport_events,
        };
        let driver = tokio::spawn(driver.run(inputs));
        match started_rx.await {
            Ok(Ok(())) => Ok(Member {
                shared,
                messenger,
                commands,
                driver,
                leave_timeout: config.leave_timeout,
            }),
            Ok(Err(error)) => {
                let _ = driver.await;
                Err(error)
            }
            Err(_) => Err(StartError::Stopped),
        }
    }

    /// This member's identity.
    pub fn id(&self) -> &MemberId {
        &self.shared.me
    }

    /// The installed view.
    pub fn view(&self) -> View {
        self.shared.view.borrow().clone()
    }

    /// Every view from now on, for waiting on a condition (`watch::Receiver::wait_for`).
    pub fn watch_view(&self) -> watch::Receiver<View> {
        self.shared.view.subscribe()
    }

    /// Membership events from now on.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }

    /// True from admission until this member leaves or is removed.
    pub fn is_active(&self) -> bool {
        *self.shared.active.borrow()
    }

    /// Counters of the membership protocol.
    pub fn stats(&self) -> GmsStats {
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends an application message to members of the view, reliably and in order per
    /// priority, without waiting. See [`Messenger::send`].
    pub fn send<M: Message>(
        &self,
        message: &M,
        priority: Priority,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        self.messenger.send(message, priority, recipients)
    }

    /// Sends an unreliable application message. See [`Messenger::send_datagram`].
    pub fn send_datagram<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        self.messenger.send_datagram(message, recipients)
    }

    /// Subscribes to application messages of type `M`, from every priority.
    pub fn subscribe<M: Message>(&self) -> Result<Subscription<M>, SubscribeError> {
        self.messenger.subscribe::<M>()
    }

    /// Reports `member` as suspect (the application finds it sick): the coordinator runs a
    /// final check, and removes it only if that fails.
    pub async fn suspect(&self, member: &MemberId, reason: impl Into<String>) {
        let command = Command::Suspect(member.clone(), reason.into());
        // A stopped driver has nobody to tell; the member is out of the cluster anyway.
        let _ = self.commands.send(command).await;
    }

    /// The messenger underneath: transport events, per-peer statistics, fault injection.
    pub fn messenger(&self) -> &Transport {
        &self.messenger
    }

    /// The address other members dial.
    pub fn address(&self) -> SocketAddr {
        self.shared.me.address()
    }

    /// Leaves the cluster gracefully: the coordinator installs a view without this member
    /// (a leaving coordinator installs it itself, and the next oldest takes over), then the
    /// messenger flushes and shuts down. Returns true if the view without this member
    /// arrived within the leave timeout.
    pub async fn leave(mut self) -> bool {
        let (reply, confirmed) = oneshot::channel();
        // The protocol bounds the leave by the leave timeout; this bounds it whatever the
        // protocol does, with room for the flush.
        let bound = self.leave_timeout * 2 + Duration::from_secs(5);
        let asked = async {
            match self.commands.send(Command::Leave(reply)).await {
                Ok(()) => confirmed.await.unwrap_or(false),
                Err(_) => false,
            }
        };
        let confirmed = tokio::time::timeout(bound, asked)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(member = ?self.shared.me, ?bound, "leave did not finish: stopping");
                false
            });
        // The driver shuts the messenger down (flushing) before it ends.
        if tokio::time::timeout(bound, &mut self.driver).await.is_err() {
            self.driver.abort();
        }
        self.messenger.shutdown().await;
        confirmed
    }

    /// Stops this member as a crash of its process would: its socket drops everything from
    /// now on, so no other member hears a goodbye or a close, its tasks end, and its port
    /// refuses further datagrams as a closed port does (see
    /// [`QuicMessenger::crash`](cohort_transport::QuicMessenger::crash)).
    /// Returns once the driver has ended. For tests of failure handling; to crash without
    /// the port closing (a host gone or cut off), isolate its socket with
    /// `messenger().faults().isolate()` instead.
    pub async fn kill(mut self) {
        // Silent first (crash isolates the socket), so the driver cannot say goodbye.
        self.messenger.crash();
        self.driver.abort();
        let _ = (&mut self.driver).await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.shared.me)
            .field("view", &self.shared.view.borrow().id())
            .finish()
    }
}

/// The task that owns the `Gms`.
struct Driver {
    gms: Gms,
    messenger: Transport,
    shared: Arc<Shared>,
    view_file: Option<PathBuf>,
    /// Told once: admitted, or why not.
    started: Option<oneshot::Sender<Result<(), StartError>>>,
    /// The coordinator the join went to (for the error if it times out).
    coordinator: Option<MemberId>,
    join_timeout: Duration,
    final_check_timeout: Duration,
    check_results: mpsc::UnboundedSender<(MemberId, CheckOutcome)>,
    leaving: Option<oneshot::Sender<bool>>,
}

/// What the driver listens to.
struct Inputs {
    messages: Subscription<GmsMessage>,
    heartbeats: Subscription<Heartbeat>,
    commands: mpsc::Receiver<Command>,
    checks: mpsc::UnboundedReceiver<(MemberId, CheckOutcome)>,
    transport: broadcast::Receiver<TransportEvent>,
}

/// Whether the driver goes on after handling the outputs.
enum Flow {
    Continue,
    Stop,
}

impl Driver {
    async fn run(mut self, mut inputs: Inputs) {
        let far = Instant::now() + Duration::from_secs(86_400);
        loop {
            if let Flow::Stop = self.act() {
                break;
            }
            let timeout = self.gms.poll_timeout().map(Instant::from_std);
            tokio::select! {
                command = inputs.commands.recv() => match command {
                    Some(Command::Leave(reply)) => {
                        if self.gms.is_member() {
                            self.leaving = Some(reply);
                            self.gms.leave(now());
                        } else {
                            let _ = reply.send(false);
                            break;
                        }
                    }
                    Some(Command::Suspect(member, reason)) => self.gms.suspect(now(), &member, reason),
                    // The Member was dropped: it stops as a crash would.
                    None => break,
                },
                envelope = inputs.messages.recv() => match envelope {
                    Some(envelope) => self.gms.handle_message(now(), &envelope.from, envelope.message),
                    None => break,
                },
                Some(heartbeat) = inputs.heartbeats.recv() => {
                    self.gms.heard_from(&heartbeat.from, now());
                    self.gms.heard_view(now(), &heartbeat.from, heartbeat.message.view_id);
                }
                Some((member, outcome)) = inputs.checks.recv() => {
                    self.gms.check_result(now(), &member, outcome);
                }
                event = inputs.transport.recv() => match event {
                    Ok(TransportEvent::Backlogged { member, queued_bytes }) => {
                        let reason = format!("{queued_bytes} bytes queued for it: it does not keep up");
                        self.gms.suspect(now(), &member, reason);
                    }
                    Ok(TransportEvent::Unreachable { address, reason }) => {
                        self.on_unreachable(address, &reason);
                    }
                    Ok(TransportEvent::RemovedBy { member }) => self.gms.refused_by(now(), &member),
                    _ => {}
                },
                () = tokio::time::sleep_until(timeout.unwrap_or(far)), if timeout.is_some() => {
                    self.feed_signs_of_life();
                    self.gms.handle_timeout(now());
                }
            }
        }
        if self.started.is_some() {
            self.report_start(Err(StartError::Stopped));
        }
        self.shared.active.send_replace(false);
        self.messenger.shutdown().await;
    }

    /// Anything the transport received from a watched member counts, not only heartbeats:
    /// a member busy sending data is alive even if its datagrams are being dropped.
    fn feed_signs_of_life(&mut self) {
        let heard: Vec<(MemberId, Instant)> = self
            .gms
            .watched()
            .iter()
            .filter_map(|m| self.messenger.last_heard(m).map(|at| (m.clone(), at)))
            .collect();
        for (member, at) in heard {
            self.gms.heard_from(&member, at.into_std());
        }
    }

    /// An ICMP error says nothing listens at `address` any more: every view member there
    /// is suspected at once (the final check decides).
    fn on_unreachable(&mut self, address: SocketAddr, reason: &str) {
        let there: Vec<MemberId> = self.gms.view().map_or_else(Vec::new, |view| {
            view.members()
                .iter()
                .filter(|m| m.address() == address)
                .cloned()
                .collect()
        });
        for member in there {
            self.gms.unreachable(now(), &member, reason);
        }
    }

    /// Runs a final check on `member` in a task of its own: alive if it answers a
    /// `FinalCheck` query over a fresh connection with its own uuid, or if anything arrives
    /// from it meanwhile; crashed if neither happens within the final-check timeout
    /// (counted from when the query's handshake starts: a checker busy with other dials
    /// must not declare anyone dead for its own backlog). When its port refuses the query
    /// (ICMP), the query itself gives up after a few round trips
    /// ([`QuicMessenger::query_within`](cohort_transport::QuicMessenger::query_within)): a
    /// live member answers within that even if the error was forged.
    fn final_check(&self, member: MemberId) {
        let messenger = self.messenger.clone();
        let results = self.check_results.clone();
        let limit = self.final_check_timeout;
        tokio::spawn(async move {
            let started = Instant::now();
            let answered = async {
                let query = FinalCheck {
                    uuid: member.uuid(),
                };
                let answer = messenger
                    .query_within(member.address(), &query, limit)
                    .await;
                match answer {
                    Ok(uuid) if uuid == member.uuid() => CheckOutcome::Alive,
                    // Nothing listens at its port any more: positive evidence of death.
                    Err(QueryError::Unreachable(_)) => CheckOutcome::Refused,
                    _ => CheckOutcome::NoAnswer,
                }
            };
            let heard = async {
                loop {
                    if messenger.last_heard(&member).is_some_and(|at| at > started) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            // The query bounds itself (from when its handshake starts). A sign of life
            // arriving meanwhile settles it early; after a failed query, one that arrived
            // while it ran still counts, but there is no second wait.
            tokio::pin!(answered, heard);
            let outcome = tokio::select! {
                outcome = &mut answered => {
                    if messenger.last_heard(&member).is_some_and(|at| at > started) {
                        CheckOutcome::Alive
                    } else {
                        outcome
                    }
                }
                () = &mut heard => CheckOutcome::Alive,
            };
            tracing::debug!(?member, ?outcome, took = ?started.elapsed(), "final check");
            // The driver may have stopped; then nobody needs the answer.
            let _ = results.send((member.clone(), outcome));
        });
    }

    /// Carries out what the `Gms` asked for.
    fn act(&mut self) -> Flow {
        // A view being prepared: its new members may send application messages from now
        // on, before this member acknowledges it (and so before they learn they are in).
        if let Some(prepared) = self.gms.prepared() {
            self.messenger.expect_view(prepared);
        }
        let mut flow = Flow::Continue;
        while let Some(output) = self.gms.poll_output() {
            match output {
                Output::Send { to, message } => self.send(&to, &message),
                Output::Heartbeat { to } => {
                    let view_id = self
                        .gms
                        .view()
                        .map_or(cohort_transport::ViewId(0), View::id);
                    if let Err(error) = self.messenger.send_datagram(&Heartbeat { view_id }, &to) {
                        tracing::debug!(%error, "heartbeat not sent");
                    }
                }
                Output::Check { member } => self.final_check(member),
                Output::Event(event) => {
                    if let Flow::Stop = self.on_event(&event) {
                        flow = Flow::Stop;
                    }
                    // No subscriber is not an error: events are for whoever listens.
                    let _ = self.shared.events.send(event);
                }
            }
        }
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.gms.stats();
        flow
    }

    fn send(&self, to: &[MemberId], message: &GmsMessage) {
        match self.messenger.send_outside_view(message, to) {
            Ok(outcome) if !outcome.is_complete() => {
                tracing::debug!(
                    ?outcome,
                    "membership message not accepted for every recipient"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "membership message not sent"),
        }
    }

    fn on_event(&mut self, event: &MembershipEvent) -> Flow {
        match event {
            MembershipEvent::ViewInstalled { view, .. } => {
                self.messenger.install_view(view.clone());
                self.shared.view.send_replace(view.clone());
                if let Some(path) = &self.view_file
                    && let Err(error) = view_file::write(path, view)
                {
                    tracing::warn!(%error, "could not persist the view");
                }
                let admitted = view.contains(&self.shared.me);
                self.shared.active.send_replace(admitted);
                if admitted {
                    tracing::info!(member = ?self.shared.me, %view, "view installed");
                    self.report_start(Ok(()));
                }
                Flow::Continue
            }
            MembershipEvent::JoinRejected { by, reason } => {
                let error = match reason.clone() {
                    JoinRejection::Authentication(reason) => StartError::AuthenticationFailed {
                        coordinator: by.clone(),
                        reason,
                    },
                    JoinRejection::VersionRefused { joining, cluster } => {
                        StartError::VersionRefused { joining, cluster }
                    }
                    JoinRejection::NameInUse(name) => StartError::NameInUse(name),
                };
                self.report_start(Err(error));
                Flow::Stop
            }
            MembershipEvent::JoinTimedOut => {
                let error = StartError::JoinTimedOut {
                    coordinator: self.coordinator_asked(),
                    waited: self.join_timeout,
                };
                self.report_start(Err(error));
                Flow::Stop
            }
            MembershipEvent::Left => {
                // Before the event goes out: whoever sees it sees an inactive member.
                self.shared.active.send_replace(false);
                let confirmed = !self.gms.view().is_some_and(|v| v.contains(&self.shared.me));
                if let Some(reply) = self.leaving.take() {
                    let _ = reply.send(confirmed);
                }
                Flow::Stop
            }
            MembershipEvent::ForcedDisconnect { reason } => {
                self.shared.active.send_replace(false);
                tracing::warn!(member = ?self.shared.me, %reason, "forced out of the cluster");
                Flow::Stop
            }
            MembershipEvent::Suspect { .. } | MembershipEvent::Reconnected { .. } => Flow::Continue,
        }
    }

    fn coordinator_asked(&self) -> MemberId {
        self.gms
            .joining_through()
            .or(self.coordinator.as_ref())
            .cloned()
            .unwrap_or_else(|| self.shared.me.clone())
    }

    fn report_start(&mut self, result: Result<(), StartError>) {
        if let Some(started) = self.started.take() {
            let _ = started.send(result);
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}
