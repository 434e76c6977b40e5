//! [`Detector`]: who watches whom, heartbeats, and when silence becomes suspicion. Sans-IO,
//! owned by [`Gms`](crate::Gms), which turns its suspicions into the final-check protocol.
//!
//! ```text
//! view installed ─► ring in view order: each member watches its two neighbours and sends
//!                   heartbeats to its successor (and to its predecessor too where the link
//!                   between them runs the legacy protocol)
//! every interval (member_timeout / 4): tick ─► heartbeat to the successor
//! KNOCKS_PER_INTERVAL times between two heartbeats: tick ─► knock at the successor
//! when a neighbour's silence reaches member_timeout + interval × doubt (its own deadline,
//!   not the next heartbeat tick: up to an interval sooner) ─► suspect
//! any sign of life (heartbeat datagram, any frame the transport received, the QUIC
//!   acknowledgements of this member's own heartbeats) ─► heard_from
//! ```
//!
//! Heartbeats go one way round the ring because QUIC acknowledges every heartbeat
//! datagram anyway: the successor's acknowledgement, sent by its own runtime within the
//! acknowledgement delay, is the sign of life the predecessor watches it by, so a
//! heartbeat back would only double the packets (each of them acknowledged in turn). Each
//! member still gets a datagram every interval (from its predecessor), which is what draws
//! the ICMP error from a crashed member's closed port, and is still watched by both
//! neighbours. The legacy protocol acknowledges nothing, so over a legacy link both
//! neighbours send heartbeats, as before.
//!
//! Between two heartbeats a member knocks at its successor's port [`KNOCKS_PER_INTERVAL`]
//! times: a one-byte UDP datagram outside QUIC that nothing answers. A heartbeat costs two
//! packets of 30-45 bytes (itself and its acknowledgement); a knock one byte. Its only use
//! is the ICMP port unreachable that a crashed member's closed port answers it with, so a
//! crash is found within a third of an interval while signs of life (which a knock, being
//! unauthenticated, never is) come at the heartbeat rate. Over a legacy link there are no
//! knocks.
//!
//! A neighbour that has not been heard from at all since it became one gets
//! [`FIRST_CONTACT_FACTOR`] member timeouts instead of one: silence before the first contact
//! more often means the connection is still queued behind other handshakes than a crash.
//!
//! **Local health**, as Lifeguard has it: a member whose own suspicions keep proving
//! false (the suspect is heard from, or its final check passes) or whose ticks run late
//! without amounting to a pause is more likely slow itself (overloaded, starved of CPU, on
//! a lossy link) than surrounded by dead members. Each such sign adds one point of doubt,
//! up to [`MAX_DOUBT`]; each point gives every neighbour one more heartbeat interval of
//! silence before it is suspected, and two member timeouts of punctual ticks with no new
//! sign take one point away (slower than a silence limit, so that suspicions proving false
//! one after another add up).
//!
//! A tick that comes much later than scheduled (a heartbeat tick or a silence deadline)
//! means this member itself was paused (a stalled runtime, a stopped process): its silence
//! clock says nothing about the others, so that tick suspects nobody and restarts every
//! clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cohort_transport::{MemberId, ProtocolVersion, View};
use uuid::Uuid;

/// A neighbour never heard from gets this many member timeouts before it is suspected.
pub const FIRST_CONTACT_FACTOR: u32 = 5;
/// The most doubt a member has in itself: at most this many heartbeat intervals are added
/// to every silence limit (2 s at the default member timeout).
pub const MAX_DOUBT: u32 = 8;
/// Knocks at the successor's port between two heartbeats, evenly spaced.
pub const KNOCKS_PER_INTERVAL: u32 = 2;

/// What one tick asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Send a heartbeat to these members.
    pub heartbeat_to: Vec<MemberId>,
    /// Knock at these members' ports.
    pub knock_to: Vec<MemberId>,
    /// These members have been silent for the member timeout.
    pub suspects: Vec<MemberId>,
    /// This member's own tick ran late: nobody was suspected.
    pub paused: bool,
}

/// The failure detector of one member. See the module docs.
#[derive(Debug)]
pub struct Detector {
    member_timeout: Duration,
    interval: Duration,
    /// A tick later than scheduled by more than this means this member was paused.
    pause_threshold: Duration,
    neighbours: Vec<MemberId>,
    /// The neighbours this member sends heartbeats to: the successor, and the predecessor
    /// over a legacy link.
    heartbeat_to: Vec<MemberId>,
    heard: HashMap<Uuid, Instant>,
    /// Neighbours heard from at least once since they became neighbours.
    ever_heard: HashSet<Uuid>,
    /// Suspected and not cleared since: not reported again.
    reported: HashSet<Uuid>,
    /// When a tick last found this member had been paused.
    last_pause: Option<Instant>,
    /// Local health: heartbeat intervals added to every silence limit (see the module docs).
    doubt: u32,
    /// When `doubt` last changed.
    doubt_changed: Option<Instant>,
    next_tick: Option<Instant>,
    /// When the last heartbeat tick ran, and how many knocks followed it.
    last_beat: Option<(Instant, u32)>,
}

impl Detector {
    /// A detector that suspects a neighbour after `member_timeout` of silence and sends
    /// heartbeats every `member_timeout / 4`, with [`KNOCKS_PER_INTERVAL`] knocks between
    /// them (each member gets a datagram from its predecessor that often, so a crashed
    /// member's closed port is found within a third of an interval).
    pub fn new(member_timeout: Duration) -> Self {
        Detector {
            member_timeout,
            interval: member_timeout / 4,
            pause_threshold: member_timeout / 4,
            neighbours: Vec::new(),
            heartbeat_to: Vec::new(),
            heard: HashMap::new(),
            ever_heard: HashSet::new(),
            reported: HashSet::new(),
            last_pause: None,
            doubt: 0,
            doubt_changed: None,
            next_tick: None,
            last_beat: None,
        }
    }

    /// The interval between heartbeats.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The members this one watches.
    pub fn watched(&self) -> &[MemberId] {
        &self.neighbours
    }

    /// Recomputes the ring for a new view. A newly watched member gets a full timeout from
    /// now; members that stay watched keep their clocks.
    pub fn view_installed(&mut self, now: Instant, view: &View, me: &MemberId) {
        self.neighbours = neighbours(view, me);
        self.heartbeat_to = heartbeat_recipients(&self.neighbours, me);
        let watched: HashSet<Uuid> = self.neighbours.iter().map(MemberId::uuid).collect();
        self.heard.retain(|uuid, _| watched.contains(uuid));
        self.ever_heard.retain(|uuid| watched.contains(uuid));
        self.reported.retain(|uuid| watched.contains(uuid));
        for member in &self.neighbours {
            self.heard.entry(member.uuid()).or_insert(now);
        }
        if view.contains(me) {
            self.next_tick.get_or_insert(now + self.interval);
        } else {
            self.next_tick = None;
            self.last_beat = None;
        }
    }

    /// A sign of life from `uuid` at `at`.
    pub fn heard_from(&mut self, uuid: Uuid, at: Instant) {
        let Some(heard) = self.heard.get_mut(&uuid) else {
            return;
        };
        self.ever_heard.insert(uuid);
        if at > *heard {
            *heard = at;
            if self.reported.remove(&uuid) {
                // Suspected for its silence, and alive after all.
                self.doubt_more(at);
            }
        }
    }

    /// How many heartbeat intervals of local-health doubt are added to every silence limit.
    pub fn doubt(&self) -> u32 {
        self.doubt
    }

    fn doubt_more(&mut self, at: Instant) {
        self.doubt = (self.doubt + 1).min(MAX_DOUBT);
        self.doubt_changed = Some(at);
    }

    /// When `uuid`, a watched member, was last heard from (or began to be watched).
    pub fn last_heard(&self, uuid: Uuid) -> Option<Instant> {
        self.heard.get(&uuid).copied()
    }

    /// A final check found `uuid` alive: its clock restarts now.
    pub fn cleared(&mut self, uuid: Uuid, now: Instant) {
        if let Some(heard) = self.heard.get_mut(&uuid) {
            *heard = now.max(*heard);
        }
        if self.reported.remove(&uuid) {
            // Suspected for its silence, and its check passed.
            self.doubt_more(now);
        }
    }

    /// True if this member ran late at some point since `since`: a tick found it paused,
    /// or the tick due now is already late by more than the pause threshold (the late tick
    /// has not run yet). Whatever this member timed meanwhile is not to be trusted.
    pub fn ran_late(&self, since: Instant, now: Instant) -> bool {
        let paused = self.last_pause.is_some_and(|at| at >= since);
        let late = self
            .next_tick
            .is_some_and(|due| now.saturating_duration_since(due) > self.pause_threshold);
        paused || late
    }

    /// When [`Detector::tick`] is due: the next heartbeat or knock, or the moment a
    /// neighbour's silence reaches its limit, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.next_tick?;
        let soonest = self.next_knock().map_or(heartbeat, |k| k.min(heartbeat));
        Some(
            self.next_silence_deadline()
                .map_or(soonest, |d| d.min(soonest)),
        )
    }

    /// When the next knock is due: evenly between the last heartbeat and the next.
    fn next_knock(&self) -> Option<Instant> {
        let (beat, knocked) = self.last_beat?;
        (knocked < KNOCKS_PER_INTERVAL)
            .then(|| beat + self.interval * (knocked + 1) / (KNOCKS_PER_INTERVAL + 1))
    }

    /// The earliest moment a neighbour not yet suspected becomes silent for its limit.
    fn next_silence_deadline(&self) -> Option<Instant> {
        self.neighbours
            .iter()
            .filter(|m| !self.reported.contains(&m.uuid()))
            .filter_map(|m| Some(*self.heard.get(&m.uuid())? + self.silence_limit(m)))
            .min()
    }

    /// How long `member` may stay silent: the member timeout, or [`FIRST_CONTACT_FACTOR`]
    /// of them before it was first heard from (many members starting at once queue their
    /// handshakes, so nothing at all may only mean the connection is still being made).
    fn silence_limit(&self, member: &MemberId) -> Duration {
        let base = match self.ever_heard.contains(&member.uuid()) {
            true => self.member_timeout,
            false => self.member_timeout * FIRST_CONTACT_FACTOR,
        };
        base + self.interval * self.doubt
    }

    /// Stops ticking (this member left the cluster).
    pub fn stop(&mut self) {
        self.next_tick = None;
        self.last_beat = None;
        self.neighbours.clear();
        self.heartbeat_to.clear();
        self.heard.clear();
        self.ever_heard.clear();
    }

    /// Heartbeats and suspicions due at `now`. Call when [`Detector::poll_timeout`] passed.
    pub fn tick(&mut self, now: Instant) -> Tick {
        let (Some(heartbeat), Some(due)) = (self.next_tick, self.poll_timeout()) else {
            return Tick::default();
        };
        if now < due {
            return Tick::default();
        }
        let mut tick = Tick::default();
        if now >= heartbeat {
            self.next_tick = Some(now + self.interval);
            self.last_beat = Some((now, 0));
            tick.heartbeat_to = self.heartbeat_to.clone();
        } else if self.next_knock().is_some_and(|at| now >= at)
            && let Some((_, knocked)) = &mut self.last_beat
        {
            *knocked += 1;
            tick.knock_to = self.heartbeat_to.clone();
        }
        let late = now.saturating_duration_since(due);
        if late > self.interval / 2 && late <= self.pause_threshold {
            // Late, though not a pause: this member is slow.
            self.doubt_more(now);
        } else if late <= self.interval / 2
            && self.doubt > 0
            && self
                .doubt_changed
                .is_none_or(|at| now.saturating_duration_since(at) >= self.member_timeout * 2)
        {
            self.doubt -= 1;
            self.doubt_changed = Some(now);
        }
        if late > self.pause_threshold {
            tick.paused = true;
            self.last_pause = Some(now);
            for heard in self.heard.values_mut() {
                *heard = now.max(*heard);
            }
            return tick;
        }
        for member in &self.neighbours {
            let limit = self.silence_limit(member);
            let silent = self
                .heard
                .get(&member.uuid())
                .is_some_and(|heard| now.saturating_duration_since(*heard) >= limit);
            if silent && self.reported.insert(member.uuid()) {
                tick.suspects.push(member.clone());
            }
        }
        tick
    }
}

/// Whom `me` sends heartbeats to, of its `neighbours` (successor first, as [`neighbours`]
/// returns them): the successor, and the predecessor if either of the two speaks the legacy
/// protocol, whose links acknowledge nothing (see the module docs).
fn heartbeat_recipients(neighbours: &[MemberId], me: &MemberId) -> Vec<MemberId> {
    let legacy = |m: &MemberId| m.version() < ProtocolVersion::QUIC;
    neighbours
        .iter()
        .enumerate()
        .filter(|(i, m)| *i == 0 || legacy(me) || legacy(m))
        .map(|(_, m)| m.clone())
        .collect()
}

/// The members next to `me` in view order, wrapping around: the successor, then the
/// predecessor; one in a view of two.
fn neighbours(view: &View, me: &MemberId) -> Vec<MemberId> {
    let members = view.members();
    let Some(at) = members.iter().position(|m| m == me) else {
        return Vec::new();
    };
    let n = members.len();
    let mut out: Vec<MemberId> = Vec::new();
    for i in [(at + 1) % n, (at + n - 1) % n] {
        if i != at && !out.contains(&members[i]) {
            out.push(members[i].clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use cohort_transport::{MemberKind, ViewId};

    use super::*;

    fn ring(n: u16) -> (View, Vec<MemberId>) {
        let members: Vec<MemberId> = (1..=n)
            .map(|i| {
                let address = format!("127.0.0.1:{i}").parse().expect("literal");
                MemberId::new(format!("m{i}"), address, MemberKind::Member)
            })
            .collect();
        (View::new(ViewId(1), members.clone()), members)
    }

    #[test]
    fn each_member_watches_its_two_neighbours_around_the_ring() {
        let (view, m) = ring(5);
        assert_eq!(neighbours(&view, &m[0]), vec![m[1].clone(), m[4].clone()]);
        assert_eq!(neighbours(&view, &m[4]), vec![m[0].clone(), m[3].clone()]);
        let (view, m) = ring(2);
        assert_eq!(neighbours(&view, &m[0]), vec![m[1].clone()]);
        let (view, m) = ring(1);
        assert!(neighbours(&view, &m[0]).is_empty());
    }

    #[test]
    fn heartbeats_go_to_the_successor_and_over_a_legacy_link_to_the_predecessor_too() {
        let (view, m) = ring(4);
        let successor_only = heartbeat_recipients(&neighbours(&view, &m[1]), &m[1]);
        assert_eq!(successor_only, vec![m[2].clone()]);
        // The legacy protocol acknowledges nothing: both ends of a legacy link heartbeat.
        let mut members = m.clone();
        members[0] = members[0].clone().with_version(ProtocolVersion::LEGACY);
        let view = View::new(ViewId(2), members.clone());
        let after_old = heartbeat_recipients(&neighbours(&view, &members[1]), &members[1]);
        assert_eq!(after_old, vec![members[2].clone(), members[0].clone()]);
        let old = heartbeat_recipients(&neighbours(&view, &members[0]), &members[0]);
        assert_eq!(old, vec![members[1].clone(), members[3].clone()]);
        // In a view of two, each is the other's successor.
        let (view, m) = ring(2);
        assert_eq!(
            heartbeat_recipients(&neighbours(&view, &m[0]), &m[0]),
            vec![m[1].clone()]
        );
        assert_eq!(
            heartbeat_recipients(&neighbours(&view, &m[1]), &m[1]),
            vec![m[0].clone()]
        );
    }

    #[test]
    fn silence_for_the_member_timeout_is_suspected_once_and_a_sign_of_life_clears_it() {
        let timeout = Duration::from_millis(1000);
        let (view, m) = ring(3);
        let mut detector = Detector::new(timeout);
        let start = Instant::now();
        detector.view_installed(start, &view, &m[0]);
        assert_eq!(detector.poll_timeout(), Some(start + detector.interval()));
        // m[1] is heard once, then goes silent; m[2] keeps talking.
        detector.heard_from(m[1].uuid(), start);
        let mut suspected = Vec::new();
        let mut now = start;
        while now < start + Duration::from_millis(1500) {
            now = detector.poll_timeout().expect("ticking");
            detector.heard_from(m[2].uuid(), now);
            let tick = detector.tick(now);
            assert!(!tick.paused);
            assert_eq!(tick.heartbeat_to.len() + tick.knock_to.len(), 1, "{tick:?}");
            suspected.extend(tick.suspects.into_iter().map(|s| (now - start, s)));
        }
        assert_eq!(suspected.len(), 1, "{suspected:?}");
        assert_eq!(suspected[0].1, m[1]);
        assert_eq!(suspected[0].0, timeout);
        // A heartbeat from it after all: it may be suspected again only after a new silence,
        // one interval longer, since the first suspicion proved false (local health).
        detector.heard_from(m[1].uuid(), now);
        assert_eq!(detector.doubt(), 1);
        let heard_at = now;
        let mut again = None;
        while again.is_none() && now < heard_at + timeout * 2 {
            now = detector.poll_timeout().expect("ticking");
            detector.heard_from(m[2].uuid(), now);
            if detector.tick(now).suspects.contains(&m[1]) {
                again = Some(now - heard_at);
            }
        }
        assert_eq!(again, Some(timeout + detector.interval()));
    }

    #[test]
    fn knocks_fall_evenly_between_heartbeats_and_go_where_heartbeats_go() {
        let timeout = Duration::from_millis(1200);
        let (view, m) = ring(3);
        let mut detector = Detector::new(timeout);
        let interval = detector.interval();
        let start = Instant::now();
        detector.view_installed(start, &view, &m[0]);
        let mut ticks = Vec::new();
        let mut now = start;
        while now < start + interval * 3 {
            now = detector.poll_timeout().expect("ticking");
            for member in &m[1..] {
                detector.heard_from(member.uuid(), now);
            }
            let tick = detector.tick(now);
            let kind = match (tick.heartbeat_to.is_empty(), tick.knock_to.is_empty()) {
                (false, true) => "beat",
                (true, false) => "knock",
                _ => panic!("one of the two per tick: {tick:?}"),
            };
            assert_eq!(
                tick.heartbeat_to
                    .iter()
                    .chain(&tick.knock_to)
                    .collect::<Vec<_>>(),
                [&m[1]]
            );
            ticks.push((now - start, kind));
        }
        let third = interval / (KNOCKS_PER_INTERVAL + 1);
        let expected: Vec<(Duration, &str)> = (3..=(3 * 3))
            .map(|k| {
                let kind = if k % 3 == 0 { "beat" } else { "knock" };
                (third * k, kind)
            })
            .collect();
        assert_eq!(ticks, expected);
        // A member that stops ticking (it left) knocks no more.
        detector.stop();
        assert_eq!(detector.poll_timeout(), None);
    }

    #[test]
    fn silence_is_suspected_at_its_own_deadline_between_heartbeat_ticks() {
        let timeout = Duration::from_millis(1000);
        let (view, m) = ring(3);
        let mut detector = Detector::new(timeout);
        let start = Instant::now();
        detector.view_installed(start, &view, &m[0]);
        let last_heard = start + Duration::from_millis(50);
        detector.heard_from(m[1].uuid(), last_heard);
        let mut now = start;
        let mut suspected = None;
        while suspected.is_none() && now < start + timeout * 2 {
            now = detector.poll_timeout().expect("ticking");
            detector.heard_from(m[2].uuid(), now);
            let tick = detector.tick(now);
            assert!(!tick.paused);
            if tick.suspects.contains(&m[1]) {
                suspected = Some(now);
                // Not a heartbeat tick: those fall on multiples of the interval.
                assert!(tick.heartbeat_to.is_empty(), "{tick:?}");
            }
        }
        assert_eq!(suspected, Some(last_heard + timeout));
        // Reported once: the next deadline is the next heartbeat, not this silence again.
        let next = detector.poll_timeout().expect("ticking");
        assert!(detector.tick(next).suspects.is_empty());
    }

    #[test]
    fn a_neighbour_never_heard_from_gets_longer_before_it_is_suspected() {
        let timeout = Duration::from_millis(1000);
        let (view, m) = ring(2);
        let mut detector = Detector::new(timeout);
        let start = Instant::now();
        detector.view_installed(start, &view, &m[0]);
        let mut now = start;
        let mut first = None;
        while first.is_none() && now < start + timeout * (FIRST_CONTACT_FACTOR + 1) {
            now = detector.poll_timeout().expect("ticking");
            if !detector.tick(now).suspects.is_empty() {
                first = Some(now - start);
            }
        }
        assert_eq!(first, Some(timeout * FIRST_CONTACT_FACTOR));
    }

    #[test]
    fn suspicions_that_prove_false_and_late_ticks_make_a_member_doubt_itself_for_a_while() {
        let timeout = Duration::from_millis(1000);
        let (view, m) = ring(3);
        let mut detector = Detector::new(timeout);
        let interval = detector.interval();
        let start = Instant::now();
        detector.view_installed(start, &view, &m[0]);
        // m[1] goes silent twice and is heard from each time after it was suspected.
        let mut now = start;
        detector.heard_from(m[1].uuid(), now);
        for expected in 1..=2 {
            let mut suspected = None;
            while suspected.is_none() {
                now = detector.poll_timeout().expect("ticking");
                detector.heard_from(m[2].uuid(), now);
                if detector.tick(now).suspects.contains(&m[1]) {
                    suspected = Some(now);
                }
            }
            detector.heard_from(m[1].uuid(), now);
            assert_eq!(detector.doubt(), expected);
        }
        // Each point of doubt is one more interval of silence before a suspicion.
        let heard = now;
        let mut suspected = None;
        while suspected.is_none() {
            now = detector.poll_timeout().expect("ticking");
            detector.heard_from(m[2].uuid(), now);
            if detector.tick(now).suspects.contains(&m[1]) {
                suspected = Some(now - heard);
            }
        }
        assert!(suspected > Some(timeout), "{suspected:?}");
        // A check that passes is the same sign; doubt has a ceiling.
        for _ in 0..MAX_DOUBT + 2 {
            detector.reported.insert(m[1].uuid());
            detector.cleared(m[1].uuid(), now);
        }
        assert_eq!(detector.doubt(), MAX_DOUBT);
        // A tick late by more than half an interval but short of a pause counts too.
        let mut slow = Detector::new(timeout);
        slow.view_installed(start, &view, &m[0]);
        let due = slow.poll_timeout().expect("ticking");
        let tick = slow.tick(due + interval * 3 / 4);
        assert!(!tick.paused);
        assert_eq!(slow.doubt(), 1);
        // Punctual ticks for two member timeouts take a point away.
        let mut now = due + interval * 3 / 4;
        while slow.doubt() > 0 && now < due + timeout * 4 {
            now = slow.poll_timeout().expect("ticking");
            slow.heard_from(m[1].uuid(), now);
            slow.heard_from(m[2].uuid(), now);
            slow.tick(now);
        }
        assert_eq!(slow.doubt(), 0);
        assert!(now >= due + timeout * 2, "{:?}", now - due);
    }

    #[test]
    fn a_late_tick_means_this_member_was_paused_and_suspects_nobody() {
        let timeout = Duration::from_millis(1000);
        let (view, m) = ring(3);
        let mut detector = Detector::new(timeout);
        let start = Instant::now();
        detector.view_installed(start, &view, &m[0]);
        let first = start + detector.interval();
        assert!(detector.tick(first).suspects.is_empty());
        // Nothing ran for 3 s: everyone looks silent, but the silence was ours.
        let woke = start + Duration::from_secs(3);
        let tick = detector.tick(woke);
        assert!(tick.paused);
        assert!(tick.suspects.is_empty());
        assert!(detector.ran_late(first, woke));
        let after = woke + Duration::from_millis(1);
        assert!(!detector.ran_late(after, woke + detector.interval()));
        // Clocks restarted at the wake-up: nobody is suspect just after it either.
        let next = detector.poll_timeout().expect("ticking");
        assert!(detector.tick(next).suspects.is_empty());
    }
}
