//! [`Core`]: every peer's streams, sans-IO. The messenger shell feeds it packets and the
//! time, and sends what it returns.
//!
//! ```text
//! push(to, priority, tag, payload) ─► peer's SendStream (created for a new recipient)
//! on_packet(from, packet, now) ─► Data: identity checks ─► ReceiveStream ─► messages out,
//!                                       acknowledgement scheduled (at once for a duplicate)
//!                                 Ack: ─► SendStream::on_ack
//! poll_transmit(now) ─► Data due (new and resent), acknowledgements due
//! install_view ─► peers not in it depart: resent until acknowledged or shutdown_timeout,
//!                 then forgotten; their late packets are dropped
//! ```
//!
//! Who may speak: a packet naming a sender in the view (or a peer already known) must come
//! from that member's address on record, and on a bridge (itself v2) a member of v2 or
//! later never speaks the legacy protocol (its QUIC connection is authenticated and this is
//! not).
//! Members of the installed view, or of a view being prepared ([`Core::expect_view`]), may
//! send anything. Everyone else is a stranger, also once on record (a joiner that sent its
//! join request): strangers may send only cohort's own protocol messages (tags below
//! `Tag::FIRST_APPLICATION`) on the Control priority, as on QUIC; at most [`MAX_STRANGERS`]
//! are kept at a time, and they are forgotten after [`STRANGER_TTL`] without a view
//! holding them. What a stranger may not send is dropped unacknowledged: a joiner admitted
//! meanwhile gets it through when its sender resends it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_transport::{MemberId, Priority, ProtocolVersion, Tag, View};
use uuid::Uuid;

use crate::config::LegacyConfig;
use crate::packet::{AckHeader, DataHeader, Packet};
use crate::stream::{
    Fragment, PushError, ReassemblyPool, ReceiveStream, Received, SendStream, SenderShare,
};

/// Departed members remembered so that their late packets are dropped.
const DEPARTED_MEMORY: usize = 10_000;
/// Peers outside the view (joiners, and members just removed) kept at once; packets from
/// further strangers are dropped until some are forgotten.
pub(crate) const MAX_STRANGERS: usize = 256;
/// A stranger not admitted into a view within this time is forgotten, with whatever was
/// queued for it.
pub(crate) const STRANGER_TTL: Duration = Duration::from_secs(60);

/// One peer's state.
struct PeerState {
    member: MemberId,
    send: [SendStream; 4],
    receive: [ReceiveStream; 4],
    ack_due: [Option<Instant>; 4],
    last_heard: Option<Instant>,
    /// Set once the peer left the view: resending stops at this time.
    departing_until: Option<Instant>,
    /// When it was last pushed to or heard from, for forgetting strangers.
    last_activity: Instant,
    /// A send to it was refused for a full queue, and its queues have not drained since:
    /// the streak is reported once (as the QUIC messenger does).
    backlogged: bool,
}

/// A complete message received on a reliable stream.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) from: MemberId,
    pub(crate) priority: Priority,
    pub(crate) tag: u32,
    pub(crate) payload: Bytes,
}

/// Counters of the protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CoreCounters {
    pub(crate) for_someone_else: u64,
    pub(crate) address_mismatch: u64,
    pub(crate) from_departed: u64,
    pub(crate) duplicates: u64,
    pub(crate) oversized: u64,
    pub(crate) reassembly_over_budget: u64,
    pub(crate) dropped_out_of_window: u64,
    pub(crate) resent: u64,
    pub(crate) from_strangers: u64,
    pub(crate) broken_streams: u64,
}

/// Every peer's streams. See the module docs.
pub(crate) struct Core {
    local: MemberId,
    config: LegacyConfig,
    view: View,
    /// A view being prepared, whose members are admitted already (see
    /// [`Core::expect_view`]).
    expected: Option<View>,
    peers: HashMap<Uuid, PeerState>,
    departed: HashSet<Uuid>,
    departed_order: VecDeque<Uuid>,
    /// Memory of messages being joined, shared by every peer's receiving streams.
    reassembly: ReassemblyPool,
    pub(crate) counters: CoreCounters,
}

impl Core {
    pub(crate) fn new(local: MemberId, config: LegacyConfig) -> Self {
        Core {
            local,
            reassembly: ReassemblyPool::new(config.max_reassembly_bytes),
            config,
            view: View::empty(),
            expected: None,
            peers: HashMap::new(),
            departed: HashSet::new(),
            departed_order: VecDeque::new(),
            counters: CoreCounters::default(),
        }
    }

    fn peer(&mut self, member: &MemberId, now: Instant) -> Option<&mut PeerState> {
        if self.departed.contains(&member.uuid()) {
            return None;
        }
        let config = &self.config;
        let pool = &self.reassembly;
        let state = self
            .peers
            .entry(member.uuid())
            .or_insert_with(|| PeerState {
                member: member.clone(),
                send: std::array::from_fn(|_| {
                    SendStream::new(
                        config.window.get(),
                        config.max_queued_bytes_per_destination.get(),
                    )
                }),
                receive: {
                    // One sender's messages being joined take at most one largest message's
                    // worth of the shared memory, whatever the priority.
                    let share = SenderShare::new(config.max_message_bytes.get());
                    std::array::from_fn(|_| {
                        ReceiveStream::new(
                            config.window.get(),
                            config.max_message_bytes.get(),
                            pool.clone(),
                            share.clone(),
                        )
                    })
                },
                ack_due: [None; 4],
                last_heard: None,
                departing_until: None,
                last_activity: now,
                backlogged: false,
            });
        state.last_activity = now;
        Some(state)
    }

    /// Whether a packet naming `sender`, of `priority` and carrying a message with `tag`,
    /// may be taken from `from` (see the module docs).
    fn admits(
        &mut self,
        sender: &MemberId,
        from: SocketAddr,
        priority: Priority,
        tag: u32,
    ) -> bool {
        let uuid = sender.uuid();
        let expected = self.expected.as_ref();
        let admitted = self
            .view
            .member(uuid)
            .or_else(|| expected.and_then(|view| view.member(uuid)));
        // A peer on record but in neither view is still a stranger (a joiner, or one that
        // merely sent a join request): its record pins its address, nothing more.
        let on_record = admitted.or_else(|| self.peers.get(&uuid).map(|p| &p.member));
        let claimed = on_record.unwrap_or(sender);
        if claimed.address() != from {
            self.counters.address_mismatch += 1;
            return false;
        }
        if claimed.version() >= ProtocolVersion::QUIC
            && self.local.version() >= ProtocolVersion::QUIC
        {
            // Two members of v2 talk over QUIC, authenticated: on a bridge, legacy packets
            // in a v2 member's name are forged.
            self.counters.address_mismatch += 1;
            return false;
        }
        if admitted.is_some() {
            return true;
        }
        if self.departed.contains(&uuid) {
            self.counters.from_departed += 1;
            return false;
        }
        // What membership needs before admission is a join request and the answers of a
        // view change, all cohort protocol messages on Control; application messages come
        // only from members, as on QUIC (`Shared::accepts` there).
        let known = on_record.is_some();
        let strangers = self.peers.len().saturating_sub(self.view.len());
        let welcome = priority == Priority::Control
            && tag < Tag::FIRST_APPLICATION.0
            && (known || strangers < MAX_STRANGERS);
        if !welcome {
            self.counters.from_strangers += 1;
        }
        welcome
    }

    /// A view being prepared: its members are admitted as members of the installed view
    /// are, until a view as new as it is installed.
    pub(crate) fn expect_view(&mut self, view: &View) {
        if view.id() > self.view.id() {
            self.expected = Some(view.clone());
        }
    }

    /// Queues a message for `to` at `now`. `Ok(false)` if `to` has departed.
    pub(crate) fn push(
        &mut self,
        to: &MemberId,
        priority: Priority,
        tag: u32,
        payload: Bytes,
        now: Instant,
    ) -> Result<bool, PushError> {
        let max_fragment = self.config.max_fragment_bytes;
        let Some(peer) = self.peer(to, now) else {
            return Ok(false);
        };
        peer.send[priority.index()].push(tag, payload, max_fragment)?;
        Ok(true)
    }

    /// When anything last arrived from `member`.
    pub(crate) fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        self.peers.get(&member.uuid())?.last_heard
    }

    /// A datagram naming `sender` arrived from `from`: true if it may be delivered (the
    /// sender is in the view, at its address on record, and speaks this protocol).
    pub(crate) fn datagram_from(
        &mut self,
        sender: &MemberId,
        from: SocketAddr,
        now: Instant,
    ) -> bool {
        let uuid = sender.uuid();
        let member = self.view.contains_uuid(uuid)
            || self
                .expected
                .as_ref()
                .is_some_and(|v| v.contains_uuid(uuid));
        // Datagrams are taken from members only, so `admits` checks just the address and
        // the version here; priority and tag are not a stranger's.
        if !member || !self.admits(sender, from, Priority::Normal, 0) {
            return false;
        }
        if let Some(peer) = self.peers.get_mut(&sender.uuid()) {
            peer.last_heard = Some(now);
        }
        true
    }

    /// Takes in a Data or Ack packet from `from`. `accept` says whether a priority may take
    /// more messages now (its subscribers keep up); when not, data is dropped
    /// unacknowledged and will be resent.
    pub(crate) fn on_packet(
        &mut self,
        from: SocketAddr,
        packet: Packet,
        now: Instant,
        accept: impl Fn(Priority) -> bool,
        delivered: &mut Vec<Delivered>,
    ) {
        match packet {
            Packet::Data(header, payload) => {
                self.on_data(from, header, payload, now, accept, delivered)
            }
            Packet::Ack(header) => self.on_ack(from, header, now),
            _ => {}
        }
    }

    fn on_data(
        &mut self,
        from: SocketAddr,
        header: DataHeader,
        payload: Bytes,
        now: Instant,
        accept: impl Fn(Priority) -> bool,
        delivered: &mut Vec<Delivered>,
    ) {
        if header.receiver != self.local.uuid() {
            self.counters.for_someone_else += 1;
            return;
        }
        let priority = Priority::ALL[usize::from(header.priority)];
        if payload.len() > self.config.max_fragment_bytes {
            // Bigger than any fragment this protocol makes: held out of order, such
            // fragments would make the window's memory bound meaningless.
            self.counters.oversized += 1;
            return;
        }
        if !self.admits(&header.sender, from, priority, header.tag) || !accept(priority) {
            return;
        }
        let ack_delay = self.config.ack_delay;
        let Some(peer) = self.peer(&header.sender, now) else {
            self.counters.from_departed += 1;
            return;
        };
        peer.last_heard = Some(now);
        let received = peer.receive[priority.index()].on_data(Fragment {
            seq: header.seq,
            fragment: header.fragment,
            fragments: header.fragments,
            tag: header.tag,
            payload,
        });
        let due = &mut peer.ack_due[priority.index()];
        if received.duplicate {
            // The sender did not hear the last acknowledgement: repeat it now.
            *due = Some(now);
        } else if !received.dropped || received.consumed {
            due.get_or_insert(now + ack_delay);
        }
        let member = peer.member.clone();
        record(&mut self.counters, &member, priority, received, delivered);
        if self.reassembly.blocked() > 0 {
            self.resume_blocked(now, &accept, delivered);
        }
    }

    /// Streams stopped for want of reassembly memory go on where there is room now (what
    /// the last packet completed, or a peer forgotten, may have freed some).
    fn resume_blocked(
        &mut self,
        now: Instant,
        accept: &impl Fn(Priority) -> bool,
        delivered: &mut Vec<Delivered>,
    ) {
        let ack_delay = self.config.ack_delay;
        // Each pass serves at least one stream or ends; a stream served may free room for
        // one already passed over, hence the loop.
        let mut progress = true;
        while progress && self.reassembly.blocked() > 0 {
            progress = false;
            for peer in self.peers.values_mut() {
                for priority in Priority::ALL {
                    let i = priority.index();
                    if !peer.receive[i].is_blocked() || !accept(priority) {
                        continue;
                    }
                    let received = peer.receive[i].resume();
                    if received.consumed {
                        progress = true;
                        peer.ack_due[i].get_or_insert(now + ack_delay);
                    }
                    record(
                        &mut self.counters,
                        &peer.member,
                        priority,
                        received,
                        delivered,
                    );
                }
            }
        }
    }

    fn on_ack(&mut self, from: SocketAddr, header: AckHeader, now: Instant) {
        if header.receiver != self.local.uuid() {
            self.counters.for_someone_else += 1;
            return;
        }
        let Some(peer) = self.peers.get_mut(&header.sender) else {
            return;
        };
        if peer.member.address() != from {
            self.counters.address_mismatch += 1;
            return;
        }
        peer.last_heard = Some(now);
        let priority = usize::from(header.priority);
        peer.send[priority].on_ack(header.delivered, header.beyond, now);
        if peer.backlogged && peer.send.iter().all(SendStream::is_idle) {
            peer.backlogged = false;
        }
    }

    /// A send to `to` was refused for a full queue: true if that starts a streak (the
    /// first refusal since its queues last drained), which is then reported once.
    pub(crate) fn note_backlogged(&mut self, to: &MemberId) -> bool {
        match self.peers.get_mut(&to.uuid()) {
            Some(peer) => !std::mem::replace(&mut peer.backlogged, true),
            None => true,
        }
    }

    /// Everything due at `now`: data (new and resent) and acknowledgements, with where
    /// each goes.
    pub(crate) fn poll_transmit(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Packet)>) {
        let mut fragments = Vec::new();
        let me = self.local.uuid();
        for peer in self.peers.values_mut() {
            let address = peer.member.address();
            for priority in Priority::ALL {
                let i = priority.index();
                fragments.clear();
                peer.send[i].due(now, &mut fragments);
                for fragment in fragments.drain(..) {
                    let header = DataHeader {
                        sender: self.local.clone(),
                        receiver: peer.member.uuid(),
                        priority: i as u8,
                        seq: fragment.seq,
                        fragment: fragment.fragment,
                        fragments: fragment.fragments,
                        tag: fragment.tag,
                    };
                    out.push((address, Packet::Data(header, fragment.payload)));
                }
                if peer.ack_due[i].is_some_and(|at| at <= now) {
                    peer.ack_due[i] = None;
                    let (delivered, beyond) = peer.receive[i].ack();
                    out.push((
                        address,
                        Packet::Ack(AckHeader {
                            sender: me,
                            receiver: peer.member.uuid(),
                            priority: i as u8,
                            delivered,
                            beyond,
                        }),
                    ));
                }
            }
        }
        self.counters.resent = self
            .peers
            .values()
            .flat_map(|p| p.send.iter().map(|s| s.resent))
            .sum::<u64>()
            .max(self.counters.resent);
    }

    /// When [`Core::poll_transmit`] or [`Core::handle_timeout`] next has work, apart from
    /// new pushes.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| {
                let resend = p.send.iter().filter_map(SendStream::next_timeout);
                let acks = p.ack_due.iter().flatten().copied();
                resend.chain(acks).chain(p.departing_until)
            })
            .min()
    }

    /// Forgets departed peers whose messages were all acknowledged or whose time is up, and
    /// strangers no view has taken in for [`STRANGER_TTL`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let view = &self.view;
        self.peers.retain(|uuid, peer| match peer.departing_until {
            Some(until) => now < until && !peer.send.iter().all(SendStream::is_idle),
            None => {
                view.contains_uuid(*uuid)
                    || now.saturating_duration_since(peer.last_activity) < STRANGER_TTL
            }
        });
    }

    /// A view was installed after `previous`: members of `previous` not in it depart.
    /// Peers in neither (joiners not admitted yet) are left alone.
    pub(crate) fn install_view(&mut self, previous: &View, view: &View, now: Instant) {
        self.view = view.clone();
        if self
            .expected
            .as_ref()
            .is_some_and(|expected| expected.id() <= view.id())
        {
            self.expected = None;
        }
        let until = now + self.config.shutdown_timeout;
        let mut gone = Vec::new();
        for member in previous.members() {
            if view.contains_uuid(member.uuid()) || member.uuid() == self.local.uuid() {
                continue;
            }
            gone.push(member.uuid());
            if let Some(peer) = self.peers.get_mut(&member.uuid())
                && peer.departing_until.is_none()
            {
                peer.departing_until = Some(until);
                // Nothing more is taken from it: what it had half sent gives its memory
                // back now, rather than when its queue has drained.
                peer.receive.iter_mut().for_each(ReceiveStream::clear);
                peer.ack_due = [None; 4];
            }
        }
        for uuid in gone {
            self.remember_departed(uuid);
        }
        self.handle_timeout(now);
    }

    fn remember_departed(&mut self, uuid: Uuid) {
        if self.departed.insert(uuid) {
            self.departed_order.push_back(uuid);
            if self.departed_order.len() > DEPARTED_MEMORY
                && let Some(oldest) = self.departed_order.pop_front()
            {
                self.departed.remove(&oldest);
            }
        }
    }

    /// True when nothing is waiting to be acknowledged by anyone.
    pub(crate) fn is_idle(&self) -> bool {
        self.peers
            .values()
            .all(|p| p.send.iter().all(SendStream::is_idle))
    }
}

/// Counts what a receiving stream did and hands on the messages it completed.
fn record(
    counters: &mut CoreCounters,
    member: &MemberId,
    priority: Priority,
    received: Received,
    delivered: &mut Vec<Delivered>,
) {
    if received.broken {
        tracing::warn!(
            sender = ?member,
            ?priority,
            "legacy stream out of step with its sender: a message was lost"
        );
    }
    counters.broken_streams += u64::from(received.broken);
    counters.duplicates += u64::from(received.duplicate);
    counters.oversized += received.oversized;
    counters.reassembly_over_budget += received.over_budget;
    counters.dropped_out_of_window += u64::from(received.dropped);
    delivered.extend(
        received
            .messages
            .into_iter()
            .map(|(tag, payload)| Delivered {
                from: member.clone(),
                priority,
                tag,
                payload,
            }),
    );
}

#[cfg(test)]
mod tests {
    use cohort_transport::{MemberKind, ViewId};

    use super::*;

    fn member(port: u16, version: ProtocolVersion) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new(format!("m{port}"), address, MemberKind::Member).with_version(version)
    }

    fn data(sender: &MemberId, receiver: &MemberId, priority: Priority, seq: u64) -> Packet {
        let header = DataHeader {
            sender: sender.clone(),
            receiver: receiver.uuid(),
            priority: priority.index() as u8,
            seq,
            fragment: 0,
            fragments: 1,
            tag: 1,
        };
        Packet::Data(header, Bytes::from_static(b"x"))
    }

    /// Feeds one packet; returns how many messages came out.
    fn feed(core: &mut Core, from: SocketAddr, packet: Packet, now: Instant) -> usize {
        let mut out = Vec::new();
        core.on_packet(from, packet, now, |_| true, &mut out);
        out.len()
    }

    /// A full queue is reported once per streak: again only after everything queued to
    /// that member was acknowledged.
    #[test]
    fn a_backlog_is_reported_once_until_the_queues_drain() {
        let (a, b) = (
            member(1, ProtocolVersion::LEGACY),
            member(2, ProtocolVersion::LEGACY),
        );
        let config = LegacyConfig {
            max_queued_bytes_per_destination: std::num::NonZeroUsize::new(100).expect("positive"),
            ..LegacyConfig::default()
        };
        let now = Instant::now();
        let view = View::new(ViewId(1), [a.clone(), b.clone()]);
        let (mut at_a, mut at_b) = (
            Core::new(a.clone(), config.clone()),
            Core::new(b.clone(), config),
        );
        at_a.install_view(&View::empty(), &view, now);
        at_b.install_view(&View::empty(), &view, now);
        let payload = Bytes::from_static(&[7; 60]);
        let full = |core: &mut Core| {
            while core
                .push(&b, Priority::Normal, 1, payload.clone(), now)
                .is_ok()
            {}
        };
        full(&mut at_a);
        assert!(
            at_a.note_backlogged(&b),
            "the first refusal starts a streak"
        );
        full(&mut at_a);
        assert!(
            !at_a.note_backlogged(&b),
            "later refusals of the streak are not reported"
        );
        // Deliver everything and bring the acknowledgements back.
        for _ in 0..10 {
            let mut out = Vec::new();
            at_a.poll_transmit(now, &mut out);
            for (_, packet) in out.drain(..) {
                feed(&mut at_b, a.address(), packet, now);
            }
            let later = now + Duration::from_secs(1);
            at_b.handle_timeout(later);
            at_b.poll_transmit(later, &mut out);
            for (_, packet) in out {
                feed(&mut at_a, b.address(), packet, now);
            }
            if at_a.is_idle() {
                break;
            }
        }
        assert!(at_a.is_idle(), "everything acknowledged");
        full(&mut at_a);
        assert!(
            at_a.note_backlogged(&b),
            "a new streak after the queues drained"
        );
    }

    #[test]
    fn a_view_member_is_heard_only_from_its_address_on_record() {
        let me = member(1, ProtocolVersion::LEGACY);
        let other = member(2, ProtocolVersion::LEGACY);
        let mut core = Core::new(me.clone(), LegacyConfig::default());
        let now = Instant::now();
        let view = View::new(ViewId(1), [me.clone(), other.clone()]);
        core.install_view(&View::empty(), &view, now);
        let elsewhere: SocketAddr = "127.0.0.1:9".parse().expect("literal");
        // The packet claims `other` and names the sender's own address: still refused.
        let mut forged = other.clone();
        forged = MemberId::new("m2", elsewhere, MemberKind::Member).with_uuid(forged.uuid());
        assert_eq!(
            feed(
                &mut core,
                elsewhere,
                data(&forged, &me, Priority::Normal, 1),
                now
            ),
            0
        );
        assert_eq!(core.counters.address_mismatch, 1);
        assert_eq!(
            feed(
                &mut core,
                other.address(),
                data(&other, &me, Priority::Normal, 1),
                now
            ),
            1
        );
    }

    #[test]
    fn on_a_bridge_legacy_packets_in_a_v2_members_name_are_refused() {
        let me = member(1, ProtocolVersion::QUIC);
        let v2 = member(2, ProtocolVersion::QUIC);
        let v1 = member(3, ProtocolVersion::LEGACY);
        let mut core = Core::new(me.clone(), LegacyConfig::default());
        let now = Instant::now();
        let view = View::new(ViewId(1), [me.clone(), v2.clone(), v1.clone()]);
        core.install_view(&View::empty(), &view, now);
        assert_eq!(
            feed(
                &mut core,
                v2.address(),
                data(&v2, &me, Priority::Normal, 1),
                now
            ),
            0
        );
        assert_eq!(
            feed(
                &mut core,
                v1.address(),
                data(&v1, &me, Priority::Normal, 1),
                now
            ),
            1
        );
        // An old member hears a v2 member over legacy: that is how bridges reach it.
        let mut old = Core::new(member(4, ProtocolVersion::LEGACY), LegacyConfig::default());
        let old_id = old.local.clone();
        let view = View::new(ViewId(1), [old_id.clone(), v2.clone()]);
        old.install_view(&View::empty(), &view, now);
        assert_eq!(
            feed(
                &mut old,
                v2.address(),
                data(&v2, &old_id, Priority::Normal, 1),
                now
            ),
            1
        );
    }

    #[test]
    fn strangers_may_only_use_control_are_bounded_and_forgotten() {
        let me = member(1, ProtocolVersion::LEGACY);
        let mut core = Core::new(me.clone(), LegacyConfig::default());
        let now = Instant::now();
        core.install_view(&View::empty(), &View::new(ViewId(1), [me.clone()]), now);
        let joiner = member(2, ProtocolVersion::LEGACY);
        assert_eq!(
            feed(
                &mut core,
                joiner.address(),
                data(&joiner, &me, Priority::Normal, 1),
                now
            ),
            0
        );
        assert_eq!(core.counters.from_strangers, 1);
        assert_eq!(
            feed(
                &mut core,
                joiner.address(),
                data(&joiner, &me, Priority::Control, 1),
                now
            ),
            1
        );
        for port in 10..(10 + MAX_STRANGERS as u16 + 10) {
            let stranger = member(port, ProtocolVersion::LEGACY);
            feed(
                &mut core,
                stranger.address(),
                data(&stranger, &me, Priority::Control, 1),
                now,
            );
        }
        assert!(
            core.peers.len() <= MAX_STRANGERS + 1,
            "{}",
            core.peers.len()
        );
        assert!(core.counters.from_strangers >= 10);
        core.handle_timeout(now + STRANGER_TTL + Duration::from_secs(1));
        assert!(core.peers.is_empty(), "strangers are forgotten");
    }

    #[test]
    fn a_stranger_on_record_stays_a_stranger_until_a_view_holds_it() {
        let me = member(1, ProtocolVersion::LEGACY);
        let mut core = Core::new(me.clone(), LegacyConfig::default());
        let now = Instant::now();
        let view = View::new(ViewId(1), [me.clone()]);
        core.install_view(&View::empty(), &view, now);
        let joiner = member(2, ProtocolVersion::LEGACY);
        let with_tag = |priority, seq, tag| {
            let Packet::Data(mut header, payload) = data(&joiner, &me, priority, seq) else {
                unreachable!("built as data")
            };
            header.tag = tag;
            Packet::Data(header, payload)
        };
        let app = Tag::FIRST_APPLICATION.0;
        // Its join request puts it on record.
        assert_eq!(
            feed(
                &mut core,
                joiner.address(),
                with_tag(Priority::Control, 1, 0x100),
                now
            ),
            1
        );
        // Application messages stay refused, on every priority.
        for priority in Priority::ALL {
            let seq = if priority == Priority::Control { 2 } else { 1 };
            assert_eq!(
                feed(
                    &mut core,
                    joiner.address(),
                    with_tag(priority, seq, app),
                    now
                ),
                0
            );
        }
        assert_eq!(core.counters.from_strangers, 4);
        // Unacknowledged: nothing of them was consumed.
        assert_eq!(
            core.peers[&joiner.uuid()].receive[Priority::Normal.index()].ack(),
            (0, 0)
        );
        // A view being prepared admits it; so does the view once installed.
        let next = View::new(ViewId(2), [me.clone(), joiner.clone()]);
        core.expect_view(&next);
        assert_eq!(
            feed(
                &mut core,
                joiner.address(),
                with_tag(Priority::Normal, 1, app),
                now
            ),
            1
        );
        core.install_view(&view, &next, now);
        assert!(
            core.expected.is_none(),
            "the installed view replaces the expected one"
        );
        assert_eq!(
            feed(
                &mut core,
                joiner.address(),
                with_tag(Priority::High, 1, app),
                now
            ),
            1
        );
    }

    #[test]
    fn a_fragment_larger_than_any_the_protocol_makes_is_dropped() {
        let me = member(1, ProtocolVersion::LEGACY);
        let other = member(2, ProtocolVersion::LEGACY);
        let config = LegacyConfig::default();
        let max = config.max_fragment_bytes;
        let mut core = Core::new(me.clone(), config);
        let now = Instant::now();
        core.install_view(
            &View::empty(),
            &View::new(ViewId(1), [me.clone(), other.clone()]),
            now,
        );
        let Packet::Data(header, _) = data(&other, &me, Priority::Normal, 1) else {
            unreachable!("built as data")
        };
        let big = Packet::Data(header, Bytes::from(vec![0u8; max + 1]));
        assert_eq!(feed(&mut core, other.address(), big, now), 0);
        assert_eq!(core.counters.oversized, 1);
    }
}
