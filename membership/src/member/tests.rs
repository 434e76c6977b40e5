//! What `leave()` returns, decided on real `Gms` instances exchanging their messages by
//! hand in virtual time, with the transport's one relevant habit modelled: a member that
//! installed a view without another closes its connection to it, and refuses its dials,
//! with `REMOVED_FROM_VIEW` (the other's driver hears `RemovedBy`: `Gms::refused_by`).

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use uuid::Uuid;

use super::*;
use crate::auth::{AllowAll, Credentials};
use crate::gms::GmsConfig;

const TICK: Duration = Duration::from_millis(10);

/// Whether the network loses a message from one member (by index) to another.
type Loss = fn(usize, usize, &GmsMessage) -> bool;

struct Net {
    gms: Vec<Gms>,
    start: Instant,
    now: Duration,
    /// Messages in flight, delivered in order before the clock moves on.
    queue: VecDeque<(usize, usize, GmsMessage)>,
    /// By member: the members of any view it installed.
    seen: Vec<HashSet<usize>>,
    /// By member: those it installed a view without, which its transport refuses.
    departed: Vec<HashSet<usize>>,
    events: Vec<Vec<MembershipEvent>>,
    /// By member: what `leave()` was answered when its `Gms` reported `Left`.
    confirmed: Vec<Option<bool>>,
    lose: Loss,
}

impl Net {
    fn new(count: u128) -> Self {
        let gms = (1..=count)
            .map(|n| {
                let address = SocketAddr::from(([127, 0, 0, 1], 20_000 + n as u16));
                let me = MemberId::new(format!("m{n}"), address, MemberKind::Member)
                    .with_uuid(Uuid::from_u128(n));
                Gms::new(me, GmsConfig::default(), Arc::new(AllowAll))
            })
            .collect::<Vec<_>>();
        let n = gms.len();
        Net {
            gms,
            start: Instant::now(),
            now: Duration::ZERO,
            queue: VecDeque::new(),
            seen: vec![HashSet::new(); n],
            departed: vec![HashSet::new(); n],
            events: vec![Vec::new(); n],
            confirmed: vec![None; n],
            lose: |_, _, _| false,
        }
    }

    fn at(&self) -> Instant {
        self.start + self.now
    }

    fn id(&self, i: usize) -> MemberId {
        self.gms[i].me().clone()
    }

    fn index(&self, member: &MemberId) -> Option<usize> {
        self.gms.iter().position(|g| g.me().uuid() == member.uuid())
    }

    fn indices(&self, members: &[MemberId]) -> Vec<usize> {
        members.iter().filter_map(|m| self.index(m)).collect()
    }

    /// Acts on member `i`'s outputs, as the driver does.
    fn drain(&mut self, i: usize) {
        let at = self.at();
        while let Some(output) = self.gms[i].poll_output() {
            match output {
                Output::Send { to, message } => {
                    for j in self.indices(&to) {
                        if !(self.lose)(i, j, &message) {
                            self.queue.push_back((i, j, message.clone()));
                        }
                    }
                }
                Output::Heartbeat { to } => {
                    let from = self.id(i);
                    for j in self.indices(&to) {
                        if !self.departed[j].contains(&i) {
                            self.gms[j].heard_from(&from, at);
                        }
                    }
                }
                // Nothing here answers a knock: the ICMP path is tested with real sockets.
                Output::Knock { .. } => {}
                Output::Prepared(_) => {}
                Output::Check { member } => {
                    self.gms[i].check_result(at, &member, CheckOutcome::Alive, None);
                }
                // The coordinator's lease decides only who believes it coordinates, which
                // plays no part in a leave.
                Output::Lease { .. } | Output::Reachability { .. } | Output::Probe { .. } => {}
                Output::Event(event) => {
                    if let MembershipEvent::ViewInstalled { view, .. } = &event {
                        let members: HashSet<usize> = view
                            .members()
                            .iter()
                            .filter_map(|m| self.index(m))
                            .collect();
                        self.seen[i].extend(&members);
                        let gone: Vec<usize> = self.seen[i].difference(&members).copied().collect();
                        let me = self.id(i);
                        for j in gone {
                            if self.departed[i].insert(j) {
                                // The messenger closes its connection to the departed.
                                self.gms[j].refused_by(at, &me);
                            }
                        }
                    }
                    if event == MembershipEvent::Left {
                        self.confirmed[i] = Some(leave_confirmed(&self.gms[i]));
                    }
                    self.events[i].push(event);
                }
            }
        }
    }

    /// Delivers what is in flight, then moves the clock on by a tick and runs the
    /// timers due.
    fn step(&mut self) {
        while let Some((from, to, message)) = self.queue.pop_front() {
            let (at, sender) = (self.at(), self.id(from));
            if self.departed[to].contains(&from) {
                // Its dial is refused: the sender's driver hears `RemovedBy`.
                let refuser = self.id(to);
                self.gms[from].refused_by(at, &refuser);
                self.drain(from);
            } else {
                self.gms[to].handle_message(at, &sender, message);
                self.drain(to);
            }
        }
        self.now += TICK;
        let at = self.at();
        for i in 0..self.gms.len() {
            if self.gms[i].poll_timeout().is_some_and(|t| t <= at) {
                self.gms[i].handle_timeout(at);
            }
            self.drain(i);
        }
    }

    fn run_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Net) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(
                self.now <= deadline,
                "{what}: not within {limit:?} of virtual time"
            );
            self.step();
        }
    }

    /// Member 0 founds a cluster and the others join it; all then hold one view.
    fn form(&mut self) {
        let at = self.at();
        self.gms[0].found_cluster(at);
        self.drain(0);
        let coordinator = self.id(0);
        for i in 1..self.gms.len() {
            self.gms[i].join(at, coordinator.clone(), Credentials::default());
            self.drain(i);
        }
        let size = self.gms.len();
        self.run_until("all hold one view of all", Duration::from_secs(5), |n| {
            let views: HashSet<_> = n.gms.iter().map(|g| g.view().map(View::id)).collect();
            views.len() == 1 && n.gms[0].view().is_some_and(|v| v.len() == size)
        });
    }

    fn leave(&mut self, i: usize) {
        let at = self.at();
        self.gms[i].leave(at);
        self.drain(i);
    }
}

/// The coordinator's round installs the view without the leaver everywhere but at the
/// leaver, whose `Decide` is lost; the leaver learns it is out only from its view's
/// members refusing it. It has left, and `leave()` says so (it said false, the leaver's
/// installed view still listing it).
#[test]
fn a_leaver_that_misses_its_decide_and_is_refused_by_the_new_view_confirms_its_leave() {
    let (coordinator, other, leaver) = (0, 1, 2);
    let mut net = Net::new(3);
    net.form();
    let first = net.gms[coordinator]
        .view()
        .and_then(|v| v.coordinator().cloned());
    assert_eq!(first.as_ref(), Some(net.gms[coordinator].me()));
    net.lose = |_, to, message| to == 2 && matches!(message, GmsMessage::Decide { .. });
    let asked = net.now;
    net.leave(leaver);
    // Well within the leave timeout: the leave must not end by giving up.
    let limit = GmsConfig::default().leave_timeout / 2;
    net.run_until("the leaver reports Left", limit, |n| {
        n.confirmed[leaver].is_some()
    });

    let me = net.id(leaver);
    for i in [coordinator, other] {
        let view = net.gms[i].view().expect("a view");
        assert!(!view.contains(&me), "{view} removed the leaver");
    }
    // Only the refusals told it: its installed view still lists it.
    let held = net.gms[leaver].view().expect("a view").clone();
    assert!(
        held.contains(&me),
        "the leaver never installed the new view"
    );
    assert!(
        net.events[leaver].contains(&MembershipEvent::Left),
        "{:?}",
        net.events[leaver]
    );
    assert_eq!(
        net.confirmed[leaver],
        Some(true),
        "leave() must say the leave is confirmed: refused by the view that removed it \
         {:?} after asking, holding {held}",
        net.now - asked
    );
}

/// A leave that nobody answered ends at the leave timeout with `Left`, unconfirmed.
#[test]
fn a_leave_that_times_out_is_not_confirmed() {
    let leaver = 2;
    let mut net = Net::new(3);
    net.form();
    net.lose = |from, _, _| from == 2;
    net.leave(leaver);
    let limit = GmsConfig::default().leave_timeout + Duration::from_secs(1);
    net.run_until("the leave times out", limit, |n| {
        n.confirmed[leaver].is_some()
    });
    assert_eq!(net.confirmed[leaver], Some(false));
    let me = net.id(leaver);
    assert!(net.gms[0].view().is_some_and(|v| v.contains(&me)));
}

/// What a final check answers, and what its answer means to the checker.
mod view_checks {
    use super::super::*;

    fn member(port: u16) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new("m", address, MemberKind::Member)
    }

    #[test]
    fn a_final_check_is_answered_for_the_identity_asked_about() {
        let first = member(1);
        let shared = Shared::new(first.clone());
        let answer = shared.check_answer(first.uuid());
        assert_eq!(
            (answer.uuid, answer.standing),
            (first.uuid(), Standing::Joining)
        );
        shared.publish_standing(first.uuid(), Standing::Member);
        shared
            .view
            .send_replace(View::new(ViewId(4), [first.clone()]));
        let answer = shared.check_answer(first.uuid());
        assert_eq!(
            (answer.uuid, answer.view_id, answer.standing),
            (first.uuid(), ViewId(4), Standing::Member)
        );

        // Forced out, and back as a new member: the old identity is out for good, the new
        // one joins, and a uuid never this member's gets the current one's answer.
        shared.publish_standing(first.uuid(), Standing::Out);
        let second = member(1);
        shared.ids.push(second.clone());
        assert_eq!(shared.check_answer(first.uuid()).standing, Standing::Out);
        let answer = shared.check_answer(second.uuid());
        assert_eq!(
            (answer.uuid, answer.standing),
            (second.uuid(), Standing::Joining)
        );
        let stranger = member(2);
        assert_eq!(shared.check_answer(stranger.uuid()).uuid, second.uuid());
    }

    #[test]
    fn only_an_answer_about_the_suspect_counts_and_it_says_how_it_stands() {
        let suspect = member(1);
        let answer = |uuid, standing| ViewCheckAnswer {
            uuid,
            view_id: ViewId(7),
            standing,
        };
        let cases = [
            (
                answer(suspect.uuid(), Standing::Member),
                (CheckOutcome::Alive, Some(ViewId(7))),
            ),
            (
                answer(suspect.uuid(), Standing::Joining),
                (CheckOutcome::Alive, None),
            ),
            (
                answer(suspect.uuid(), Standing::Out),
                (CheckOutcome::Out, None),
            ),
            (
                answer(member(1).uuid(), Standing::Member),
                (CheckOutcome::NoAnswer, None),
            ),
        ];
        for (answer, expected) in cases {
            assert_eq!(verdict(&suspect, &answer), expected, "{answer:?}");
        }
    }

    /// An older build of the legacy protocol serves only `FinalCheck` and drops any other
    /// query without a word: a `ViewCheck` to it would time out and count as a crash.
    #[tokio::test]
    async fn a_suspect_on_the_legacy_protocol_is_asked_the_check_older_builds_serve() {
        use cohort_legacy_udp::LegacyConfig;
        use cohort_transport::Identity;
        let bind = |name: &str| {
            cohort_legacy_udp::bind(&Identity::named(name), LegacyConfig::default())
                .expect("bind a legacy messenger on loopback")
        };
        let older = bind("older");
        let suspect = older.local_member().clone();
        assert_eq!(suspect.version(), ProtocolVersion::LEGACY);
        let uuid = suspect.uuid();
        older.serve::<FinalCheck>(move |_, _| uuid);
        let checker = bind("checker");
        let query = ViewCheck {
            uuid,
            checker: checker.local_member().clone(),
            view_id: ViewId(3),
        };
        let limit = Duration::from_millis(400);
        let started = Instant::now();
        let outcome = ask(&checker, &suspect, &query, limit).await;
        assert_eq!(
            outcome,
            (CheckOutcome::Alive, None),
            "after {:?}",
            started.elapsed()
        );

        // A newer build answers the nil uuid once it is out.
        let out = bind("out");
        out.serve::<FinalCheck>(|_, _| Uuid::nil());
        let gone = out.local_member().clone();
        let outcome = ask(&checker, &gone, &query, limit).await;
        assert_eq!(outcome, (CheckOutcome::Out, None));
        checker.shutdown().await;
    }
}

#[test]
fn a_final_check_waits_longer_on_a_slow_link_up_to_its_cap() {
    let (timeout, cap) = (Duration::from_millis(400), Duration::from_secs(2));
    // Fast links, or none measured yet: the preset's timeout.
    assert_eq!(check_limit(timeout, None, cap), timeout);
    assert_eq!(
        check_limit(timeout, Some(Duration::from_millis(1)), cap),
        timeout
    );
    // A 150 ms round trip: six of them.
    assert_eq!(
        check_limit(timeout, Some(Duration::from_millis(150)), cap),
        Duration::from_millis(900)
    );
    // However slow (or however wrong the estimate), at most the cap.
    assert_eq!(check_limit(timeout, Some(Duration::from_secs(5)), cap), cap);
}
