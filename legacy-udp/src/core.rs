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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use cohort_transport::{MemberId, Priority, View};
use uuid::Uuid;

use crate::config::LegacyConfig;
use crate::packet::{AckHeader, DataHeader, Packet};
use crate::stream::{Fragment, PushError, ReceiveStream, SendStream};

/// Departed members remembered so that their late packets are dropped.
const DEPARTED_MEMORY: usize = 10_000;

/// One peer's state.
struct PeerState {
    member: MemberId,
    send: [SendStream; 4],
    receive: [ReceiveStream; 4],
    ack_due: [Option<Instant>; 4],
    last_heard: Option<Instant>,
    /// Set once the peer left the view: resending stops at this time.
    departing_until: Option<Instant>,
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
    pub(crate) dropped_out_of_window: u64,
    pub(crate) resent: u64,
}

/// Every peer's streams. See the module docs.
pub(crate) struct Core {
    local: MemberId,
    config: LegacyConfig,
    peers: HashMap<Uuid, PeerState>,
    departed: HashSet<Uuid>,
    departed_order: VecDeque<Uuid>,
    pub(crate) counters: CoreCounters,
}

impl Core {
    pub(crate) fn new(local: MemberId, config: LegacyConfig) -> Self {
        Core {
            local,
            config,
            peers: HashMap::new(),
            departed: HashSet::new(),
            departed_order: VecDeque::new(),
            counters: CoreCounters::default(),
        }
    }

    fn peer(&mut self, member: &MemberId) -> Option<&mut PeerState> {
        if self.departed.contains(&member.uuid()) {
            return None;
        }
        let config = &self.config;
        let state = self
            .peers
            .entry(member.uuid())
            .or_insert_with(|| PeerState {
                member: member.clone(),
                send: std::array::from_fn(|_| {
                    SendStream::new(config.window, config.max_queued_bytes_per_destination)
                }),
                receive: std::array::from_fn(|_| {
                    ReceiveStream::new(
                        config.window,
                        config.max_message_bytes,
                        config.max_fragment_bytes,
                    )
                }),
                ack_due: [None; 4],
                last_heard: None,
                departing_until: None,
            });
        Some(state)
    }

    /// True if `member` left a view installed here.
    pub(crate) fn has_departed(&self, member: &MemberId) -> bool {
        self.departed.contains(&member.uuid())
    }

    /// Queues a message for `to`. `Ok(false)` if `to` has departed.
    pub(crate) fn push(
        &mut self,
        to: &MemberId,
        priority: Priority,
        tag: u32,
        payload: Bytes,
    ) -> Result<bool, PushError> {
        let max_fragment = self.config.max_fragment_bytes;
        let Some(peer) = self.peer(to) else {
            return Ok(false);
        };
        peer.send[priority.index()].push(tag, payload, max_fragment)?;
        Ok(true)
    }

    /// When anything last arrived from `member`.
    pub(crate) fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        self.peers.get(&member.uuid())?.last_heard
    }

    /// The round-trip estimate to `member` (its Control stream's, else any).
    pub(crate) fn rtt(&self, member: &MemberId) -> Option<std::time::Duration> {
        self.peers
            .get(&member.uuid())?
            .send
            .iter()
            .find_map(SendStream::rtt)
    }

    /// A sign of life that did not come through a stream (a datagram).
    pub(crate) fn heard_from(&mut self, member: &MemberId, now: Instant) {
        if let Some(peer) = self.peers.get_mut(&member.uuid()) {
            peer.last_heard = Some(now);
        }
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
            Packet::Ack(header) => self.on_ack(header, now),
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
        if header.sender.address() != from {
            self.counters.address_mismatch += 1;
            return;
        }
        let priority = Priority::ALL[usize::from(header.priority)];
        if !accept(priority) {
            return;
        }
        let ack_delay = self.config.ack_delay;
        let Some(peer) = self.peer(&header.sender) else {
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
        } else if !received.dropped {
            due.get_or_insert(now + ack_delay);
        }
        let from = peer.member.clone();
        self.counters.duplicates += u64::from(received.duplicate);
        self.counters.oversized += received.oversized;
        self.counters.dropped_out_of_window += u64::from(received.dropped);
        delivered.extend(
            received
                .messages
                .into_iter()
                .map(|(tag, payload)| Delivered {
                    from: from.clone(),
                    priority,
                    tag,
                    payload,
                }),
        );
    }

    fn on_ack(&mut self, header: AckHeader, now: Instant) {
        if header.receiver != self.local.uuid() {
            self.counters.for_someone_else += 1;
            return;
        }
        let Some(peer) = self.peers.get_mut(&header.sender) else {
            return;
        };
        peer.last_heard = Some(now);
        let priority = usize::from(header.priority);
        peer.send[priority].on_ack(header.delivered, header.beyond, now);
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

    /// Forgets departed peers whose messages were all acknowledged, or whose time is up.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.peers.retain(|_, peer| match peer.departing_until {
            Some(until) => now < until && !peer.send.iter().all(SendStream::is_idle),
            None => true,
        });
    }

    /// A view was installed after `previous`: members of `previous` not in it depart.
    /// Peers in neither (joiners not admitted yet) are left alone.
    pub(crate) fn install_view(&mut self, previous: &View, view: &View, now: Instant) {
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
