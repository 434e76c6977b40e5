//! [`Member`]: the tokio driver of [`Gms`] and the public front door.
//!
//! ```text
//! Member::builder ─► MemberBuilder::subscribe (the member's Relays, before any messenger)
//!                 ─► MemberBuilder::start = Member::start with those subscriptions
//! Member::start ─► Messenger (QUIC, legacy or bridge, by MemberConfig::protocol)
//!               ─► Relays::start: the builder's subscriptions relay from it from now on
//!                                      ─► serve FindCoordinator (discovery answers),
//!                                          ViewCheck (the standing the driver published,
//!                                          and the checker's view id ─► the driver) and
//!                                          FinalCheck (this member's uuid, unless out)
//!               ─► discovery rounds (discover.rs) ─► Gms::join(coordinator) or found_cluster
//!               ─► supervisor task (reconnect.rs) runs one driver per incarnation:
//!                  driver ◄── GmsMessage, LeaseMessage and Heartbeat subscriptions, Gms timers,
//!                             commands (leave, suspect), transport events (backlog,
//!                             unreachable address), final-check results, the view ids
//!                             of the members that checked this one ─► Gms::heard_view
//!                      │ before each timer: the transport's last-heard times of the
//!                      │ watched members ─► Gms::heard_from
//!                      │ Gms outputs:
//!                      ├─ Send      ─► messenger.send_outside_view (Control priority)
//!                      ├─ Lease     ─► messenger.send_datagram (own tag)
//!                      ├─ Heartbeat ─► messenger.send_datagram
//!                      ├─ Knock     ─► messenger.knock
//!                      ├─ Prepared  ─► messenger.expect_view (its new members may speak)
//!                      ├─ Check     ─► task: ViewCheck query over a fresh connection (or
//!                      │               FinalCheck, if the suspect does not serve it), or
//!                      │               any sign of life, within final_check_timeout (a
//!                      │               few round trips once the port refuses the query);
//!                      │               a member's answer carries its view id ─► heard_view
//!                      └─ Event     ─► view installed: messenger.install_view, view watch,
//!                                      persisted view file (locators), event broadcast
//!                  after each input: Gms::standing published for the query handlers
//!                  ForcedDisconnect (auto_reconnect on) ─► the old messenger shut down and
//!                      released ─► a new uuid bound to the same address ─► discovery with
//!                      backoff ─► a new Gms joins ─► Reconnected{old, new, reason}
//! ```
//!
//! `start` returns once the driver reports this member in a view, or the reason it never
//! will be. The driver owns the `Gms`; everything the application reads (view, events,
//! counters, the end of its coordinator lease, the current identity and messenger) is
//! published after every input into state shared with the
//! `Member`, so no call on a `Member` waits for it. One `Member` value lives through any
//! number of incarnations: its view watch, event broadcast and (with auto-reconnect) the
//! application's subscriptions are the member's, not the incarnation's.

mod config;
mod discover;
mod event_stream;
mod file;
mod identities;
mod reconnect;
mod relay;
mod status;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use cohort_legacy_udp::LegacyBindError;
use cohort_transport::{
    BindError, ClusterTls, MemberId, MemberKind, Message, Messenger, Priority, SendError,
    SendOutcome, SubscribeError, Subscription, Tag, TransportEvent, View, ViewId,
};
use cohort_transport::{ProtocolVersion, QueryError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use self::config::gms_config;
pub use self::config::{MemberConfig, Preset, StartError};
pub use self::event_stream::{EventStream, MissedEvents};
use self::identities::Identities;
use self::reconnect::Life;
use self::relay::Relays;
pub use self::status::{AskLocatorError, LocatorReport, ask_locator};
pub use self::transport::Protocol;
use crate::gms::{CheckOutcome, Gms, GmsStats, MembershipEvent, Output};
use crate::messages::{
    DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage, Heartbeat, JoinRejection,
    LeaseMessage, ReachabilityMessage, Standing, ViewCheck, ViewCheckAnswer,
};
use crate::metrics::MemberMetrics;
use crate::{rival, view_file};

/// Membership events buffered for slow subscribers.
const EVENT_CAPACITY: usize = 1024;
/// How often a joiner repeats an unanswered join request.
/// How long a member forced out that will reconnect lets its messenger flush before it is
/// dropped: the members it was talking to have removed it and refuse what it sends.
const RELEASE_FLUSH: Duration = Duration::from_millis(250);
/// Checkers' view ids waiting for the driver; more are dropped. Each only hints at a newer
/// view, and the driver asks for one at most once per member timeout anyway.
const CHECKERS_HEARD: usize = 64;
/// Heartbeats a final check sends over the existing connection within its timeout.
const CHECK_HEARTBEATS: u32 = 4;
/// Round trips of the last connection to a suspect that its final check allows at least:
/// a fresh handshake and the query take two or three.
const CHECK_ROUND_TRIPS: u32 = 6;

/// How long a final check waits: the preset's `timeout`, or longer on a link whose measured
/// round trip (`rtt`, of the last connection to the suspect) would not fit a handshake and
/// an answer in it, up to `cap` (twice the member timeout: a round waits for first checks).
fn check_limit(timeout: Duration, rtt: Option<Duration>, cap: Duration) -> Duration {
    let by_rtt = rtt.map_or(Duration::ZERO, |rtt| rtt * CHECK_ROUND_TRIPS);
    timeout.max(by_rtt.min(cap))
}

/// A final check's result for the driver: the suspect, the outcome, the view id it
/// answered with as a member, and the checker it probed for (`Output::Probe`), if any.
type CheckReport = (MemberId, CheckOutcome, Option<ViewId>, Option<MemberId>);

/// One member of a cluster: in a view from the moment [`Member::start`] returns until it
/// leaves, is removed, or is dropped.
///
/// Removed while alive, or on the side of a partition that lost its quorum, it is told with
/// [`MembershipEvent::ForcedDisconnect`]; with [`MemberConfig::auto_reconnect`] (the default)
/// it then joins again by itself as a new member (a new uuid, the same name and address),
/// and says so with [`MembershipEvent::Reconnected`]. The same `Member` value goes on
/// working across that: [`Member::id`] and [`Member::messenger`] return the current
/// incarnation's, the view watch and event stream carry on, and subscriptions made with
/// [`Member::subscribe`] receive what is sent to the new member.
///
/// A `Member` is a handle: clones share the one member, so a service can hand it to
/// every task that sends or watches, and any of them can [`Member::leave`]. It needs a
/// tokio runtime of either flavour (current-thread or multi-thread): its tasks run on the
/// runtime it was started on, which must keep running while the member does. Dropping the
/// last handle stops the member at once, like a crash (no leave, no flush, no more
/// reconnect attempts); call [`Member::leave`] to go gracefully.
#[derive(Clone)]
#[must_use = "dropping the last Member handle stops it at once, like a crash; call leave to go"]
pub struct Member {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    /// The application's subscriptions, when they must outlive an incarnation.
    relays: Option<Arc<Relays>>,
    commands: mpsc::Sender<Command>,
    life: Arc<Lifetime>,
    leave_timeout: Duration,
}

/// What ends with the last handle of a member: its supervisor, aborted on drop unless a
/// leave or a kill ended it first.
struct Lifetime {
    /// Taken by the leave or kill that ends the member; its lock orders them.
    supervisor: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// The first leave's result, which every later leave returns.
    left: OnceLock<bool>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        if let Some(supervisor) = self.supervisor.get_mut().take() {
            supervisor.abort();
        }
    }
}

/// What the driver publishes for the application and for discovery answers. It holds no
/// messenger: the messengers' query handlers hold it, and a messenger must be released
/// entirely for its port to be bound again.
struct Shared {
    /// Every identity this member has had; the newest is the current one.
    ids: Identities,
    /// The installed view; empty until this member is in one. After a forced disconnect,
    /// the last view installed, until the new incarnation installs one.
    view: watch::Sender<View>,
    /// True from admission until the member leaves or is removed (and again from the
    /// admission of a new incarnation).
    active: watch::Sender<bool>,
    events: broadcast::Sender<MembershipEvent>,
    /// Summed over every incarnation.
    stats: Mutex<GmsStats>,
    /// Times this member rejoined by itself.
    reconnects: AtomicU64,
    /// Until when this incarnation holds the coordinator lease while it coordinates
    /// (`Gms::coordinator_until`); `None` when it does not coordinate.
    coordinator_until: Mutex<Option<std::time::Instant>>,
    /// The standing of the identity named, as its driver last published it.
    standing: Mutex<(Uuid, Standing)>,
    /// The members of the view reported unreachable (`Gms::unreachable_members`).
    unreachable: Mutex<Vec<MemberId>>,
}

impl Shared {
    fn new(me: MemberId) -> Self {
        Shared {
            standing: Mutex::new((me.uuid(), Standing::Joining)),
            ids: Identities::new(me),
            view: watch::Sender::new(View::empty()),
            active: watch::Sender::new(false),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            stats: Mutex::new(GmsStats::default()),
            reconnects: AtomicU64::new(0),
            coordinator_until: Mutex::new(None),
            unreachable: Mutex::new(Vec::new()),
        }
    }

    fn publish_unreachable(&self, members: Vec<MemberId>) {
        *self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = members;
    }

    fn me(&self) -> &MemberId {
        self.ids.current()
    }

    fn stats(&self) -> GmsStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn discovery_answer(&self) -> DiscoveryAnswer {
        let view = Some(self.view.borrow().clone()).filter(|_| *self.active.borrow());
        DiscoveryAnswer {
            responder: self.me().clone(),
            view,
        }
    }

    /// The driver of incarnation `uuid` says where it stands now.
    fn publish_standing(&self, uuid: Uuid, standing: Standing) {
        *self.standing.lock().unwrap_or_else(PoisonError::into_inner) = (uuid, standing);
    }

    /// Where this member's identity `uuid` stands: the current one as its driver last
    /// published (joining until it has), any earlier one out for good (it was forced out or
    /// never admitted, and this member came back as a new one).
    fn standing_of(&self, uuid: Uuid) -> Standing {
        if uuid != self.me().uuid() {
            return Standing::Out;
        }
        match *self.standing.lock().unwrap_or_else(PoisonError::into_inner) {
            (of, standing) if of == uuid => standing,
            _ => Standing::Joining,
        }
    }

    /// The answer to a final check of `asked`: where that identity stands, if it is or was
    /// this member's; otherwise where the current one stands, which tells the checker that
    /// another process holds the suspect's address.
    fn check_answer(&self, asked: Uuid) -> ViewCheckAnswer {
        let uuid = if self.ids.contains(asked) {
            asked
        } else {
            self.me().uuid()
        };
        ViewCheckAnswer {
            uuid,
            view_id: self.view.borrow().id(),
            standing: self.standing_of(uuid),
        }
    }
}

/// The current incarnation's messenger (between incarnations, a stand-in: see
/// [`transport::stand_in`]).
struct Slot(RwLock<Messenger>);

impl Slot {
    fn get(&self) -> Messenger {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` on the messenger without cloning it (the send path).
    fn with<T>(&self, f: impl FnOnce(&Messenger) -> T) -> T {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `messenger` in place; returns the one it replaces.
    fn replace(&self, messenger: Messenger) -> Messenger {
        std::mem::replace(
            &mut self.0.write().unwrap_or_else(PoisonError::into_inner),
            messenger,
        )
    }
}

enum Command {
    Leave(oneshot::Sender<bool>),
    Suspect(MemberId, String),
}

/// A member not started yet: subscriptions made here exist before it joins, so nothing
/// sent to it once it is in a view can arrive before its subscriber. [`Member::builder`]
/// makes one, [`MemberBuilder::start`] joins.
///
/// A member already started can subscribe too ([`Member::subscribe`]), but messages of that
/// type that reached it before are gone: another member may send to it as soon as it sees
/// it in its view, which can be before `start` returns.
///
/// ```no_run
/// # use cohort_membership::{Member, MemberConfig};
/// # use cohort_transport::{Message, Tag};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Greeting(String);
/// # impl Message for Greeting { const TAG: Tag = Tag::from_name("example/greeting"); }
/// # async fn demo(config: MemberConfig) -> Result<(), Box<dyn std::error::Error>> {
/// let mut builder = Member::builder(config);
/// let mut greetings = builder.subscribe::<Greeting>()?;
/// let member = builder.start().await?;
/// while let Some(greeting) = greetings.recv().await {
///     println!("{} says {}", greeting.from, greeting.message.0);
/// }
/// # let _ = member.leave().await;
/// # Ok(())
/// # }
/// ```
#[must_use = "a member builder does nothing until it is started"]
pub struct MemberBuilder {
    config: MemberConfig,
    /// The subscriptions made before the start, once there is one.
    relays: Option<Arc<Relays>>,
}

impl MemberBuilder {
    /// Subscribes to application messages of type `M`, from every priority, before the
    /// member exists; the subscription receives everything sent to every incarnation of
    /// the member. A tag reserved for cohort's own protocols is refused
    /// ([`SubscribeError::ReservedTag`]), as is a second type under one tag.
    pub fn subscribe<M: Message>(&mut self) -> Result<Subscription<M>, SubscribeError> {
        application_tag(M::TAG).map_err(SubscribeError::ReservedTag)?;
        let capacity = self.config.transport.subscription_capacity.get();
        let relays = self
            .relays
            .get_or_insert_with(|| Arc::new(Relays::new(capacity)));
        // Not started: the relay starts on the first messenger, once it is bound.
        relays.subscribe::<M>(|| None)
    }

    /// Starts the member: see [`Member::start`]. Every subscription made on this builder
    /// is in place before the member asks anyone for the cluster.
    pub async fn start(self) -> Result<Member, StartError> {
        Member::start_with(self.config, self.relays).await
    }
}

impl std::fmt::Debug for MemberBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberBuilder")
            .field("config", &self.config)
            .field("subscriptions", &self.relays.is_some())
            .finish()
    }
}

/// `Ok` for an application tag, the tag back for a reserved one.
fn application_tag(tag: Tag) -> Result<(), Tag> {
    if tag.is_application() {
        Ok(())
    } else {
        Err(tag)
    }
}

impl Member {
    /// A member to set up before it starts: subscribe there, so that nothing sent to it
    /// once it is in a view finds no subscriber (see [`MemberBuilder`]).
    pub fn builder(config: MemberConfig) -> MemberBuilder {
        MemberBuilder {
            config,
            relays: None,
        }
    }

    /// Binds the member's socket, finds the cluster through the locators (or founds it,
    /// for a locator that finds none) and joins it. Returns once this member is in a view,
    /// or with the reason it could not get into one within the join timeout. To subscribe
    /// before it joins, use [`Member::builder`].
    pub async fn start(config: MemberConfig) -> Result<Member, StartError> {
        Member::start_with(config, None).await
    }

    /// [`Member::start`], with the subscriptions made before it (`relays`), if any.
    async fn start_with(
        config: MemberConfig,
        relays: Option<Arc<Relays>>,
    ) -> Result<Member, StartError> {
        config.validate()?;
        let deadline = Instant::now() + config.join_timeout;
        let tls = config.tls.load()?;
        let messenger = bind(&config, &tls)?;
        let me = messenger.local_member().clone();
        let shared = Arc::new(Shared::new(me.clone()));
        let inputs = attach(&shared, &messenger)?;
        let slot = Arc::new(Slot(RwLock::new(messenger.clone())));
        // Subscriptions must outlive an incarnation with auto-reconnect on, and those made
        // before the start need a dispatcher before the messenger exists: both are relayed.
        let relays = relays.or_else(|| {
            config
                .auto_reconnect
                .then(|| Arc::new(Relays::new(config.transport.subscription_capacity.get())))
        });
        if let Some(relays) = &relays {
            // Before discovery: nobody can send this member anything before it asks.
            relays.start(tokio::runtime::Handle::current(), &messenger);
        }

        let view_file = match (&config.working_dir, config.identity.kind) {
            (Some(dir), MemberKind::Locator) => Some(view_file::path_for(dir, me.address().port())),
            _ => None,
        };
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
            &config.locators,
            &targets,
            (
                config.discovery_interval,
                config.transport.handshake_timeout,
            ),
            deadline,
        )
        .await;

        let now = Instant::now();
        let join_timeout = deadline.saturating_duration_since(now);
        let mut gms = Gms::new(
            me.clone(),
            gms_config(&config, join_timeout),
            config.authenticator.clone(),
        );
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
            Err(discover::Failure::Unfounded(reason)) => {
                messenger.shutdown().await;
                return Err(StartError::NotFounded {
                    waited: config.join_timeout,
                    reason,
                });
            }
            Err(discover::Failure::Refused { by, reason }) => {
                messenger.shutdown().await;
                return Err(StartError::Refused { by, reason });
            }
        };

        let (commands, command_rx) = mpsc::channel(8);
        let (started, started_rx) = oneshot::channel();
        let mut driver = Driver::new(gms, messenger, &inputs, shared.clone(), &config);
        driver.view_file = view_file.clone();
        driver.started = Some(started);
        driver.coordinator = coordinator;
        let life = Life {
            config: config.for_reconnect(&me),
            tls,
            shared: shared.clone(),
            slot: slot.clone(),
            relays: relays.clone(),
            view_file,
        };
        let supervisor = tokio::spawn(reconnect::supervise(life, driver, inputs, command_rx));
        match started_rx.await {
            Ok(Ok(())) => Ok(Member {
                shared,
                slot,
                relays,
                commands,
                life: Arc::new(Lifetime {
                    supervisor: tokio::sync::Mutex::new(Some(supervisor)),
                    left: OnceLock::new(),
                }),
                leave_timeout: config.leave_timeout,
            }),
            Ok(Err(error)) => {
                let _ = supervisor.await;
                Err(error)
            }
            Err(_) => Err(StartError::Stopped),
        }
    }

    /// This member's current identity. A reconnect makes a new one (a new uuid, the same
    /// name and address; see [`MembershipEvent::Reconnected`]), from the moment its messenger
    /// is bound, before it is admitted. A reference taken earlier keeps reading the identity
    /// it was taken from.
    pub fn id(&self) -> &MemberId {
        self.shared.me()
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

    /// Membership events from now on, as a `futures_core::Stream` (for combinators and
    /// `select` loops): the same events as [`Member::events`], with a missed stretch
    /// reported as [`MissedEvents`].
    pub fn event_stream(&self) -> EventStream {
        EventStream::new(self.events())
    }

    /// True from admission until this member leaves or is removed, and again once a
    /// reconnect has admitted it.
    pub fn is_active(&self) -> bool {
        *self.shared.active.borrow()
    }

    /// True only while this member coordinates the cluster and holds the coordinator lease
    /// from members holding a weighted majority of its view: given clocks that run at the
    /// same rate (their readings need not agree), at most one member at a time is
    /// coordinator of a given view id, however the network or the processes stall. An
    /// application can run singleton duties under it, checking again before each step. Just
    /// after a view change (up to one and a half member timeouts), and for up to three
    /// member timeouts after a coordinator was cut off, nobody is.
    pub fn is_coordinator(&self) -> bool {
        let until = *self
            .shared
            .coordinator_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|until| until > now())
    }

    /// The members of the view that are unreachable from the member that runs final
    /// checks (each reported as [`MembershipEvent::Unreachable`]): still in the view, and
    /// removed only if they stay so for `removal_timeout`. Route around them meanwhile.
    pub fn unreachable(&self) -> Vec<MemberId> {
        self.unreachable_in(&self.view())
    }

    /// The members of `view` reported unreachable.
    fn unreachable_in(&self, view: &View) -> Vec<MemberId> {
        self.shared
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|m| view.contains(m))
            .cloned()
            .collect()
    }

    /// Counters of the membership protocol, summed over every incarnation of this member.
    pub fn stats(&self) -> GmsStats {
        self.shared.stats()
    }

    /// Every counter this member keeps, read at once: the membership protocol's, the
    /// socket's, the dispatcher's, the limits', the legacy protocol's and one set per
    /// other member of the view. With the `prometheus` feature,
    /// [`crate::metrics::prometheus::MemberCollector`] serves them as OpenMetrics series.
    pub fn metrics(&self) -> MemberMetrics {
        let view = self.view();
        let messenger = self.slot.get();
        let peers = view
            .members()
            .iter()
            .filter(|m| *m != self.id())
            .filter_map(|m| messenger.peer_stats(m))
            .collect();
        MemberMetrics {
            member: self.id().clone(),
            unreachable: self.unreachable_in(&view).len(),
            gms: self.stats(),
            reconnects: self.reconnects(),
            socket: messenger.socket_stats(),
            limits: messenger.limit_stats(),
            dispatch: messenger.dispatch_stats(),
            legacy: transport::legacy_stats(&messenger),
            peers,
            view,
        }
    }

    /// Times this member rejoined the cluster by itself after being forced out (each one
    /// reported as [`MembershipEvent::Reconnected`]).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Sends an application message to members of the view, reliably and in order per
    /// priority, without waiting. See [`Messenger::send`]. A tag reserved for cohort's own
    /// protocols is refused ([`SendError::ReservedTag`]): its receivers would hand it to
    /// the protocol.
    pub fn send<M: Message>(
        &self,
        message: &M,
        priority: Priority,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        application_tag(M::TAG).map_err(SendError::ReservedTag)?;
        self.slot.with(|m| m.send(message, priority, recipients))
    }

    /// [`Member::send`] to every other member of the current view.
    pub fn send_to_others<M: Message>(
        &self,
        message: &M,
        priority: Priority,
    ) -> Result<SendOutcome, SendError> {
        let me = self.id().uuid();
        let others: Vec<MemberId> = self
            .view()
            .members()
            .iter()
            .filter(|member| member.uuid() != me)
            .cloned()
            .collect();
        self.send(message, priority, &others)
    }

    /// Sends an unreliable application message. See [`Messenger::send_datagram`]. A
    /// reserved tag is refused, as by [`Member::send`].
    pub fn send_datagram<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        application_tag(M::TAG).map_err(SendError::ReservedTag)?;
        self.slot.with(|m| m.send_datagram(message, recipients))
    }

    /// Subscribes to application messages of type `M`, from every priority. With
    /// auto-reconnect on, the subscription is the member's: after a reconnect it receives
    /// what is sent to the new incarnation, and it ends (`None`) only once the member has
    /// stopped for good (see the `relay` module for what that costs). Messages of `M` that
    /// arrived before are gone; subscribe on the [`MemberBuilder`] to have none arrive
    /// before. A reserved tag is refused ([`SubscribeError::ReservedTag`]).
    pub fn subscribe<M: Message>(&self) -> Result<Subscription<M>, SubscribeError> {
        application_tag(M::TAG).map_err(SubscribeError::ReservedTag)?;
        match &self.relays {
            Some(relays) => relays.subscribe::<M>(|| Some(self.slot.get())),
            None => self.slot.with(|m| m.subscribe::<M>()),
        }
    }

    /// Reports `member` as suspect (the application finds it sick): the coordinator runs a
    /// final check, and removes it only if that fails.
    pub async fn suspect(&self, member: &MemberId, reason: impl Into<String>) {
        let command = Command::Suspect(member.clone(), reason.into());
        // A stopped driver has nobody to tell; the member is out of the cluster anyway.
        let _ = self.commands.send(command).await;
    }

    /// The current incarnation's messenger: transport events, per-peer statistics, fault
    /// injection. A reconnect replaces it with a new one (and its fault rules, counters and
    /// events start afresh); between the old one's release and the new one's bind, this is
    /// a stand-in that holds no socket and is shut down. Do not keep a clone across a
    /// reconnect: it holds the old socket, and the new messenger cannot bind the same port
    /// until it is dropped (the reconnect waits for that, and warns).
    ///
    /// A test hook (feature `test-hooks`): the messenger also takes views and senders
    /// behind the protocol's back.
    #[cfg(feature = "test-hooks")]
    pub fn messenger(&self) -> Messenger {
        self.slot.get()
    }

    /// The address other members dial (the same for every incarnation).
    pub fn address(&self) -> SocketAddr {
        self.shared.me().address()
    }

    /// Leaves the cluster gracefully: the coordinator installs a view without this member
    /// (a leaving coordinator installs it itself, and the next oldest takes over), then the
    /// messenger flushes and shuts down. Returns true if the view without this member
    /// arrived within the leave timeout. A member forced out and not yet back stops trying
    /// to reconnect, and returns false. Any handle may leave, more than once: a leave
    /// while another runs waits for it, and every later one returns the first one's
    /// result (false after a `kill`, a test hook); the other handles then see a member that has
    /// stopped.
    #[must_use = "false: the view without this member did not arrive within the leave timeout"]
    pub async fn leave(&self) -> bool {
        // Held to the end: a leave from another handle meanwhile waits, then returns this
        // one's result.
        let mut guard = self.life.supervisor.lock().await;
        if let Some(left) = self.life.left.get() {
            return *left;
        }
        let Some(mut supervisor) = guard.take() else {
            // Killed: there is nothing to leave.
            return false;
        };
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
                tracing::warn!(member = ?self.shared.me(), ?bound, "leave did not finish: stopping");
                false
            });
        // The driver shuts the messenger down (flushing) before it ends.
        if tokio::time::timeout(bound, &mut supervisor).await.is_err() {
            supervisor.abort();
        }
        self.slot.get().shutdown().await;
        let _ = self.life.left.set(confirmed);
        confirmed
    }

    /// Stops this member as a crash of its process would: its socket drops everything from
    /// now on, so no other member hears a goodbye or a close, its tasks end, and its port
    /// refuses further datagrams as a closed port does (see
    /// [`Messenger::crash`]).
    /// Returns once the driver has ended. For tests of failure handling; to crash without
    /// the port closing (a host gone or cut off), isolate its socket with
    /// `messenger().faults().isolate()` instead. A test hook (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub async fn kill(&self) {
        // Silent first (crash isolates the socket), so the driver cannot say goodbye.
        self.slot.get().crash();
        let taken = self.life.supervisor.lock().await.take();
        if let Some(supervisor) = taken {
            supervisor.abort();
            let _ = supervisor.await;
        }
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", self.shared.me())
            .field("view", &self.shared.view.borrow().id())
            .finish()
    }
}

/// Binds the messenger `config` asks for, at `config.identity.bind`.
fn bind(config: &MemberConfig, tls: &ClusterTls) -> Result<Messenger, StartError> {
    let identity = config.announced();
    transport::bind(
        config.protocol,
        &identity,
        &config.transport,
        &config.legacy,
        tls,
    )
}

/// True if binding failed only because the port is still taken (by the previous
/// incarnation's socket, until its last handle is gone).
fn port_in_use(error: &StartError) -> bool {
    let source = match error {
        StartError::Bind(BindError::Socket { source, .. })
        | StartError::LegacyBind(LegacyBindError::Socket { source, .. }) => source,
        _ => return false,
    };
    source.kind() == std::io::ErrorKind::AddrInUse
}

/// Puts a new messenger to work for `shared`'s current identity: answers discovery and
/// final checks, and subscribes the driver's inputs (a checker's view id among them).
fn attach(shared: &Arc<Shared>, messenger: &Messenger) -> Result<Inputs, StartError> {
    let messages = messenger
        .subscribe::<GmsMessage>()
        .map_err(|_| StartError::Stopped)?;
    let heartbeats = messenger
        .subscribe::<Heartbeat>()
        .map_err(|_| StartError::Stopped)?;
    let leases = messenger
        .subscribe::<LeaseMessage>()
        .map_err(|_| StartError::Stopped)?;
    let reachability = messenger
        .subscribe::<ReachabilityMessage>()
        .map_err(|_| StartError::Stopped)?;
    let transport = messenger.events();
    let answering = shared.clone();
    messenger.serve::<FindCoordinator>(move |query, from| {
        tracing::trace!(asker = ?query.asker, %from, "discovery query");
        answering.discovery_answer()
    });
    let (checker_views, checked_by) = mpsc::channel(CHECKERS_HEARD);
    let answering = shared.clone();
    messenger.serve::<ViewCheck>(move |query, _| {
        // A full queue drops the hint: see CHECKERS_HEARD.
        let _ = checker_views.try_send((query.checker, query.view_id));
        answering.check_answer(query.uuid)
    });
    // Each messenger answers with the uuid of its own incarnation, and only while that is
    // a member or joining: the nil uuid names nobody, so an older checker finds it gone.
    let uuid = messenger.local_member().uuid();
    let answering = shared.clone();
    messenger.serve::<FinalCheck>(move |_, _| match answering.standing_of(uuid) {
        Standing::Member | Standing::Joining => uuid,
        Standing::Out => Uuid::nil(),
    });
    let (check_results, checks) = mpsc::unbounded_channel();
    let (rival_answers, rivals) = mpsc::unbounded_channel();
    Ok(Inputs {
        messages,
        heartbeats,
        leases,
        reachability,
        checks,
        check_results,
        checked_by,
        rivals,
        rival_answers,
        transport,
    })
}

/// The task that owns the `Gms` of one incarnation.
struct Driver {
    gms: Gms,
    /// This incarnation.
    me: MemberId,
    messenger: Messenger,
    shared: Arc<Shared>,
    view_file: Option<PathBuf>,
    /// Told once: admitted, or why not (the first incarnation only: `start` waits on it).
    started: Option<oneshot::Sender<Result<(), StartError>>>,
    /// The member this one replaces and why it was forced out, until this one is admitted
    /// and says so with `Reconnected`.
    reconnected: Option<(MemberId, String)>,
    admitted: bool,
    /// The coordinator the join went to (for the error if it times out).
    coordinator: Option<MemberId>,
    join_timeout: Duration,
    final_check_timeout: Duration,
    /// The longest a final check waits however slow the link (see [`check_limit`]).
    final_check_cap: Duration,
    /// How long a member forced out that will reconnect gives its messenger to close.
    release_timeout: Option<Duration>,
    /// The counters of the incarnations before this one.
    base: GmsStats,
    check_results: mpsc::UnboundedSender<CheckReport>,
    leaving: Option<oneshot::Sender<bool>>,
    /// The configured locators: while this member coordinates, those outside its view
    /// are asked whether they are in another cluster (see `rival`).
    locators: Vec<SocketAddr>,
    /// How long one discovery query may take.
    query_limit: Duration,
    rival_probe_interval: Duration,
    rival_answers: mpsc::UnboundedSender<DiscoveryAnswer>,
}

/// What the driver listens to, besides the member's commands.
struct Inputs {
    messages: Subscription<GmsMessage>,
    heartbeats: Subscription<Heartbeat>,
    leases: Subscription<LeaseMessage>,
    reachability: Subscription<ReachabilityMessage>,
    checks: mpsc::UnboundedReceiver<CheckReport>,
    /// Cloned into each final-check task.
    check_results: mpsc::UnboundedSender<CheckReport>,
    /// The members that checked this one, with the view ids their checks named.
    checked_by: mpsc::Receiver<(MemberId, ViewId)>,
    /// What configured locators outside the view answered a coordinator's rival probe.
    rivals: mpsc::UnboundedReceiver<DiscoveryAnswer>,
    /// Cloned into each rival probe.
    rival_answers: mpsc::UnboundedSender<DiscoveryAnswer>,
    transport: broadcast::Receiver<TransportEvent>,
}

/// How an incarnation's driver ended.
enum Ending {
    /// Forced out of the cluster: the member it was, and why.
    ForcedOut { me: MemberId, reason: String },
    /// Never admitted: the join was refused or timed out.
    NotAdmitted,
    /// Left, dropped, or its messenger stopped: nothing more to do.
    Finished,
}

impl Driver {
    fn new(
        gms: Gms,
        messenger: Messenger,
        inputs: &Inputs,
        shared: Arc<Shared>,
        config: &MemberConfig,
    ) -> Self {
        Driver {
            me: messenger.local_member().clone(),
            gms,
            messenger,
            base: shared.stats(),
            shared,
            view_file: None,
            started: None,
            reconnected: None,
            admitted: false,
            coordinator: None,
            join_timeout: config.join_timeout,
            final_check_timeout: config.final_check_timeout,
            final_check_cap: (config.member_timeout * 2).max(config.final_check_timeout),
            // Its peers removed it, so a flush has no one to reach: bounded, not waited out.
            release_timeout: config.auto_reconnect.then_some(RELEASE_FLUSH),
            check_results: inputs.check_results.clone(),
            leaving: None,
            locators: config.locators.clone(),
            query_limit: config.transport.handshake_timeout,
            rival_probe_interval: config.member_timeout * rival::RIVAL_PROBE_MEMBER_TIMEOUTS,
            rival_answers: inputs.rival_answers.clone(),
        }
    }

    async fn run(mut self, mut inputs: Inputs, commands: &mut mpsc::Receiver<Command>) -> Ending {
        let far = Instant::now() + Duration::from_secs(86_400);
        let mut next_rival_probe = Instant::now() + self.rival_probe_interval;
        let ending = loop {
            if let Some(ending) = self.act() {
                break ending;
            }
            let timeout = self.gms.poll_timeout().map(Instant::from_std);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Leave(reply)) => {
                        if self.gms.is_member() {
                            self.leaving = Some(reply);
                            self.gms.leave(now());
                        } else {
                            let _ = reply.send(false);
                            break Ending::Finished;
                        }
                    }
                    Some(Command::Suspect(member, reason)) => self.gms.suspect(now(), &member, reason),
                    // The Member was dropped: it stops as a crash would.
                    None => break Ending::Finished,
                },
                envelope = inputs.messages.recv() => match envelope {
                    Some(envelope) => self.gms.handle_message(now(), &envelope.from, envelope.message),
                    None => break Ending::Finished,
                },
                Some(lease) = inputs.leases.recv() => {
                    self.gms.handle_lease(now(), &lease.from, lease.message);
                }
                Some(notice) = inputs.reachability.recv() => {
                    self.gms.handle_reachability(now(), &notice.from, notice.message);
                }
                Some(heartbeat) = inputs.heartbeats.recv() => {
                    self.gms.heard_from(&heartbeat.from, now());
                    self.gms.heard_view(now(), &heartbeat.from, heartbeat.message.view_id);
                }
                Some((member, outcome, view_id, asker)) = inputs.checks.recv() => {
                    match asker {
                        Some(asker) => {
                            self.gms.probe_result(now(), &asker, &member, outcome);
                            if let Some(view_id) = view_id {
                                self.gms.heard_view(now(), &member, view_id);
                            }
                        }
                        None => self.gms.check_result(now(), &member, outcome, view_id),
                    }
                }
                Some((checker, view_id)) = inputs.checked_by.recv() => {
                    self.gms.heard_view(now(), &checker, view_id);
                }
                () = tokio::time::sleep_until(next_rival_probe) => {
                    next_rival_probe += self.rival_probe_interval;
                    self.probe_for_rivals();
                }
                Some(answer) = inputs.rivals.recv() => self.on_rival_answer(&answer),
                event = inputs.transport.recv() => match event {
                    Ok(TransportEvent::Backlogged { member, queued_bytes }) => {
                        let reason = format!("{queued_bytes} bytes queued for it: it does not keep up");
                        self.gms.suspect(now(), &member, reason);
                    }
                    Ok(TransportEvent::Unreachable { address, reason }) => {
                        self.on_unreachable(address, &reason);
                    }
                    Ok(TransportEvent::RemovedBy { member }) => self.gms.refused_by(now(), &member),
                    Ok(TransportEvent::Undelivered { member, tag, count }) => {
                        // The application's to hear: nothing for the protocol to do.
                        let event = MembershipEvent::Undelivered { member, tag, count };
                        let _ = self.shared.events.send(event);
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(timeout.unwrap_or(far)), if timeout.is_some() => {
                    self.feed_signs_of_life();
                    self.gms.handle_timeout(now());
                }
            }
        };
        if self.started.is_some() {
            self.report_start(Err(StartError::Stopped));
        }
        self.shared.active.send_replace(false);
        self.publish_coordinator(None);
        self.shared.publish_standing(self.me.uuid(), Standing::Out);
        match (&ending, self.release_timeout) {
            (Ending::ForcedOut { .. }, Some(limit)) => {
                // What is left of it after the limit is stopped, and its port freed for
                // the next incarnation (a shutdown that ended in time may still leave its
                // connections draining on it).
                let _ = tokio::time::timeout(limit, self.messenger.shutdown()).await;
                self.messenger.release_port();
            }
            _ => self.messenger.shutdown().await,
        }
        ending
    }

    /// While this member coordinates: asks each configured locator whose address is not
    /// in the view which cluster it is in (answers go to `on_rival_answer`). A cluster
    /// whose locators are all in its view sends nothing.
    fn probe_for_rivals(&self) {
        let Some(view) = self.gms.view().filter(|_| self.gms.is_coordinator(now())) else {
            return;
        };
        let outside = self.locators.iter().copied().filter(|a| {
            *a != self.me.address() && !view.members().iter().any(|m| m.address() == *a)
        });
        for address in outside {
            let messenger = self.messenger.clone();
            let answers = self.rival_answers.clone();
            let query = FindCoordinator {
                asker: self.me.clone(),
            };
            let limit = self.query_limit;
            tokio::spawn(async move {
                if let Ok(answer) = messenger.query_within(address, &query, limit).await {
                    let _ = answers.send(answer);
                }
            });
        }
    }

    /// A configured locator outside the view answered: if it is in another cluster that
    /// ranks above this one, this cluster yields (`Gms::dissolve`).
    fn on_rival_answer(&mut self, answer: &DiscoveryAnswer) {
        let Some(view) = self.gms.view() else {
            return;
        };
        let Some(reason) = rival::yields_to(view, answer.view.as_ref()) else {
            return;
        };
        tracing::warn!(responder = ?answer.responder, %reason, "yielding to another cluster");
        if !self.gms.dissolve(now(), reason) {
            tracing::info!("not coordinating now: the next probe decides again");
        }
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

    /// Runs a final check on `member` in a task of its own: a `ViewCheck` query over a
    /// fresh connection, naming this member and its view, and beside it a heartbeat
    /// datagram over the existing connection every quarter of the timeout. Alive if it
    /// answers with its own uuid as a member (its view id goes to `Gms::heard_view`) or
    /// joiner, or if anything arrives from it meanwhile, the QUIC acknowledgement of one of
    /// those heartbeats included (sent by its own runtime: a lost handshake datagram, which
    /// costs about a second to retransmit, no longer fails a check of a member whose
    /// connection works); out if it answers that it is out; crashed if nothing comes
    /// within the final-check timeout, or within six round trips of the last connection to
    /// it where that is longer ([`check_limit`]), counted from when the query's handshake
    /// starts (a checker busy with other dials must not declare anyone dead for its own
    /// backlog). A suspect that does not serve `ViewCheck` (an older build) is asked
    /// `FinalCheck` within what is left of the timeout. When its port refuses the query
    /// (ICMP), the query itself gives up after a few round trips
    /// ([`Messenger::query_within`]): a
    /// live member answers within that even if the error was forged. A probe for another
    /// member's checker (`asker`) is the same check, reported as the probe's.
    fn final_check(&self, member: MemberId, asker: Option<MemberId>) {
        let messenger = self.messenger.clone();
        let results = self.check_results.clone();
        let rtt = self.messenger.peer_stats(&member).and_then(|s| s.rtt);
        let limit = check_limit(self.final_check_timeout, rtt, self.final_check_cap);
        let query = ViewCheck {
            uuid: member.uuid(),
            checker: self.me.clone(),
            view_id: self.gms.view().map_or(ViewId(0), View::id),
        };
        let heartbeat = Heartbeat {
            view_id: query.view_id,
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let answered = ask(&messenger, &member, &query, limit);
            let heard = async {
                let mut next_heartbeat = started;
                loop {
                    if messenger.last_heard(&member).is_some_and(|at| at > started) {
                        return;
                    }
                    if Instant::now() >= next_heartbeat {
                        // Several, so that one lost datagram (or its acknowledgement)
                        // costs nothing; without a connection it is dropped, and the
                        // query decides.
                        let to = std::slice::from_ref(&member);
                        let _ = messenger.send_datagram(&heartbeat, to);
                        next_heartbeat += limit / CHECK_HEARTBEATS;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            // The query bounds itself (from when its handshake starts). A sign of life
            // arriving meanwhile settles it early; after a failed query, one that arrived
            // while it ran still counts, but there is no second wait. An answer that the
            // suspect is out stands: what it sent before saying so proves nothing.
            tokio::pin!(answered, heard);
            let (outcome, view_id) = tokio::select! {
                answer = &mut answered => match answer {
                    (CheckOutcome::NoAnswer | CheckOutcome::Refused, _)
                        if messenger.last_heard(&member).is_some_and(|at| at > started) =>
                    {
                        (CheckOutcome::Alive, None)
                    }
                    answer => answer,
                },
                () = &mut heard => (CheckOutcome::Alive, None),
            };
            tracing::debug!(?member, ?outcome, ?view_id, took = ?started.elapsed(), "final check");
            // The driver may have stopped; then nobody needs the answer.
            let _ = results.send((member.clone(), outcome, view_id, asker));
        });
    }

    /// Carries out what the `Gms` asked for; says how the driver ends, if it does.
    fn act(&mut self) -> Option<Ending> {
        let mut ending = None;
        while let Some(output) = self.gms.poll_output() {
            match output {
                // Its new members may send application messages from now on, before this
                // member acknowledges it (and so before they learn they are in).
                Output::Prepared(view) => self.messenger.expect_view(&view),
                Output::Send { to, message } => self.send(&to, &message),
                // A datagram: a lost one costs one grant of one round (see the lease).
                Output::Lease { to, message } => {
                    if let Err(error) = self.messenger.send_datagram(&message, &to) {
                        tracing::debug!(%error, "lease message not sent");
                    }
                }
                Output::Reachability { to, message } => self.send(&to, &message),
                Output::Heartbeat { to } => {
                    let view_id = self
                        .gms
                        .view()
                        .map_or(cohort_transport::ViewId(0), View::id);
                    if let Err(error) = self.messenger.send_datagram(&Heartbeat { view_id }, &to) {
                        tracing::debug!(%error, "heartbeat not sent");
                    }
                }
                Output::Knock { to } => {
                    for member in &to {
                        self.messenger.knock(member);
                    }
                }
                Output::Check { member } => self.final_check(member, None),
                Output::Probe { member, asker } => self.final_check(member, Some(asker)),
                Output::Event(event) => {
                    if let Some(end) = self.on_event(&event) {
                        ending = Some(end);
                    }
                    // No subscriber is not an error: events are for whoever listens.
                    let _ = self.shared.events.send(event);
                    if self.admitted
                        && let Some((old, reason)) = self.reconnected.take()
                    {
                        // After the view that admitted it, so that a listener sees the
                        // member in a view when it hears of the reconnect.
                        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(?old, new = ?self.me, "reconnected");
                        let _ = self.shared.events.send(MembershipEvent::Reconnected {
                            old,
                            new: self.me.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.base + self.gms.stats();
        self.publish_coordinator(self.gms.coordinator_until());
        self.shared
            .publish_standing(self.me.uuid(), self.gms.standing());
        ending
    }

    fn publish_coordinator(&self, until: Option<std::time::Instant>) {
        *self
            .shared
            .coordinator_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = until;
    }

    fn send<M: Message>(&self, to: &[MemberId], message: &M) {
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

    fn on_event(&mut self, event: &MembershipEvent) -> Option<Ending> {
        match event {
            MembershipEvent::ViewInstalled { view, .. } => {
                self.messenger.install_view(view.clone());
                self.shared.view.send_replace(view.clone());
                self.shared
                    .publish_unreachable(self.gms.unreachable_members());
                if let Some(path) = &self.view_file
                    && let Err(error) = view_file::write(path, view)
                {
                    tracing::warn!(%error, "could not persist the view");
                }
                let admitted = view.contains(&self.me);
                self.shared.active.send_replace(admitted);
                if admitted {
                    self.admitted = true;
                    tracing::info!(member = ?self.me, %view, "view installed");
                    self.report_start(Ok(()));
                }
                None
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
                if self.started.is_none() {
                    tracing::warn!(member = ?self.me, %error, "not admitted");
                }
                self.report_start(Err(error));
                Some(Ending::NotAdmitted)
            }
            MembershipEvent::JoinTimedOut => {
                let error = StartError::JoinTimedOut {
                    coordinator: self.coordinator_asked(),
                    waited: self.join_timeout,
                };
                if self.started.is_none() {
                    tracing::warn!(member = ?self.me, %error, "not admitted");
                }
                self.report_start(Err(error));
                Some(Ending::NotAdmitted)
            }
            MembershipEvent::Left => {
                // Before the event goes out: whoever sees it sees an inactive member.
                self.shared.active.send_replace(false);
                let confirmed = leave_confirmed(&self.gms);
                if let Some(reply) = self.leaving.take() {
                    let _ = reply.send(confirmed);
                }
                Some(Ending::Finished)
            }
            MembershipEvent::ForcedDisconnect { reason } => {
                self.shared.active.send_replace(false);
                tracing::warn!(member = ?self.me, %reason, "forced out of the cluster");
                Some(Ending::ForcedOut {
                    me: self.me.clone(),
                    reason: reason.clone(),
                })
            }
            MembershipEvent::Unreachable { .. } | MembershipEvent::Reachable { .. } => {
                self.shared
                    .publish_unreachable(self.gms.unreachable_members());
                None
            }
            MembershipEvent::Suspect { .. }
            | MembershipEvent::LinkProblem { .. }
            | MembershipEvent::Reconnected { .. }
            | MembershipEvent::Undelivered { .. } => None,
        }
    }

    fn coordinator_asked(&self) -> MemberId {
        self.gms
            .joining_through()
            .or(self.coordinator.as_ref())
            .cloned()
            .unwrap_or_else(|| self.me.clone())
    }

    fn report_start(&mut self, result: Result<(), StartError>) {
        if let Some(started) = self.started.take() {
            let _ = started.send(result);
        }
    }
}

/// What `leave()` returns once the `Gms` reported `Left`: whether this member knows it is
/// out of the cluster's view (its installed view dropped it, or members of that view refused
/// it for a newer view that did), rather than having given up at the leave timeout or shut
/// down for a partition.
fn leave_confirmed(gms: &Gms) -> bool {
    gms.is_out_of_view()
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The query half of a final check of `member`, bounded by `limit`. A member of protocol
/// version 1 (the legacy UDP protocol) is asked `FinalCheck`: an older build of it drops a
/// query it does not serve without a word, so a `ViewCheck` would only time out and count
/// as a crash. Any other is asked `ViewCheck`, and `FinalCheck` in what is left of the
/// limit if it does not serve that (an older QUIC build says so).
async fn ask(
    messenger: &Messenger,
    member: &MemberId,
    query: &ViewCheck,
    limit: Duration,
) -> (CheckOutcome, Option<ViewId>) {
    let started = Instant::now();
    if member.version() == ProtocolVersion::LEGACY {
        return (ask_final_check(messenger, member, limit).await, None);
    }
    match messenger.query_member_within(member, query, limit).await {
        Ok(answer) => verdict(member, &answer),
        Err(QueryError::NotServed { .. }) => {
            let left = limit.saturating_sub(started.elapsed());
            (ask_final_check(messenger, member, left).await, None)
        }
        // Nothing listens at its port any more: positive evidence of death.
        Err(QueryError::Unreachable(_)) => (CheckOutcome::Refused, None),
        // Its rate limiter refused the check after the handshake, with the cluster's
        // certificate: a live process at its address. Never evidence of death.
        Err(QueryError::RateLimited(_)) => (CheckOutcome::Alive, None),
        Err(_) => (CheckOutcome::NoAnswer, None),
    }
}

/// `FinalCheck`, the check older builds serve: alive if it answers with its own uuid, out if
/// with the nil uuid (a build that serves `ViewCheck` too says so once out).
async fn ask_final_check(
    messenger: &Messenger,
    member: &MemberId,
    limit: Duration,
) -> CheckOutcome {
    let query = FinalCheck {
        uuid: member.uuid(),
    };
    match messenger.query_member_within(member, &query, limit).await {
        Ok(uuid) if uuid == member.uuid() => CheckOutcome::Alive,
        Ok(uuid) if uuid.is_nil() => CheckOutcome::Out,
        Err(QueryError::Unreachable(_)) => CheckOutcome::Refused,
        Err(QueryError::RateLimited(_)) => CheckOutcome::Alive,
        _ => CheckOutcome::NoAnswer,
    }
}

/// What a suspect's answer to a [`ViewCheck`] says of it, and the view id of one that is a
/// member. An answer about another uuid comes from another process at its address (it
/// restarted): the suspect did not answer.
fn verdict(suspect: &MemberId, answer: &ViewCheckAnswer) -> (CheckOutcome, Option<ViewId>) {
    if answer.uuid != suspect.uuid() {
        return (CheckOutcome::NoAnswer, None);
    }
    match answer.standing {
        Standing::Member => (CheckOutcome::Alive, Some(answer.view_id)),
        // Admitted in a view it has not installed yet: alive, and it knows no newer view.
        Standing::Joining => (CheckOutcome::Alive, None),
        Standing::Out => (CheckOutcome::Out, None),
    }
}

#[cfg(test)]
mod tests;
