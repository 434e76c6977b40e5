//! Membership figures: forming, joining, crash to removal, idle traffic, the simulation.
//!
//! Everything but the simulation runs an in-process [`Cluster`] of real members (real QUIC
//! and TLS over loopback) with default settings; one locator, the rest ordinary members.
//! Every wait is bounded by [`LIMIT`] and polls every [`POLL`], which is the resolution of
//! the timings.
//!
//! - `membership.form.n10`, `membership.form.n50` (s): one locator and N-1 members started
//!   at once; from the start until every one of them holds the same view of N (same id,
//!   same members in the same order). Certificates are issued before the clock starts.
//! - `membership.form_views.n50` (views): the id of that agreed view. View ids start at 1
//!   (the founding locator's view of itself) and the coordinator installs each next view
//!   with the last id plus one, so with no crash on the way the final id is exactly the
//!   number of distinct views the cluster went through, the founder's own included.
//! - `membership.join_one.n50` (s): in the stable cluster of 50 left by the last form
//!   repetition, one more member is started; from its start until every member's view
//!   contains it. After each repetition the joiner leaves gracefully and the 50 agree again,
//!   so every repetition joins into 50.
//! - `membership.idle_bytes_per_member` (B/s): a stable cluster of 20, left alone for a
//!   settling period, then each repetition is one window: UDP payload bytes every member
//!   handed to the kernel (`SocketStats::bytes_sent`), summed, per member per second.
//! - `membership.crash_to_removal.p50`, `.p99` (s): in that cluster of 20, one member at a
//!   time (never the locator, which coordinates) crashes, once heartbeats flow
//!   between it and its ring neighbours since the current view; from the crash until every
//!   survivor's view lacks it. A replacement then joins, the 20 agree again, and the next
//!   victim is further round the ring; each victim ends a different fraction of a
//!   heartbeat interval after a heartbeat was seen (`round_offset`), as real crashes fall
//!   anywhere in a round. The crash is `Member::kill`: nothing more goes out,
//!   every task ends, and the port refuses datagrams as a dead process's closed port does
//!   (the host stays up and answers with ICMP port unreachable), which is what the
//!   unreachable hint detects.
//! - `membership.silent_to_removal.p50`, `.p99` (s): the same, but the victim is
//!   blackholed through the socket fault seam instead: its port stays open and nothing
//!   answers, so there is no ICMP error and only the heartbeat path can find it (a host
//!   that lost power or its network). The silenced member is stopped after the
//!   measurement. With the default preset that is the two stages: unreachable, then the
//!   removal timeout (5 s, counted from the silence), then the indirect probes.
//! - `membership.silent_to_unreachable.p50`, `.p99` (s): for those same victims, from the
//!   blackholing until every survivor lists it in `Member::unreachable` (the reversible
//!   signal).
//! - `membership.crash_to_removal.lan_fast.p50`, `.p99` and
//!   `membership.silent_to_removal.lan_fast.p50`, `.p99` (s): the same crashes and
//!   silences in a second cluster of 20 whose members all use the `lan_fast` preset (one
//!   stage: a silent member is removed at its first unanswered check, never unreachable
//!   first), so that the trade against the default shows.
//! - `membership.pause_tolerance.lan`, `.lan_fast` (s): a cluster of one locator, four
//!   members and a sleeper on a runtime of its own, with that preset. The sleeper's runtime
//!   is blocked for each pause of 0.5, 1, 1.5, 2, 3, 4 and 5 s in turn (`Cluster::stall`,
//!   as a stopped process or a VM pause), a few trials each; after each, the cluster is
//!   watched until the sleeper is either back in every view and reachable for two member
//!   timeouts running (it stayed) or out of some view (it was removed). The figure is the
//!   longest pause such that it and every shorter one always stayed.
//!   `membership.pause_false_removals.lan`, `.lan_fast` (count): the trials in which the
//!   sleeper was removed. `membership.pause_rejoin.lan`, `.lan_fast` (s): in those trials,
//!   and in as many more with a pause past the preset's removal timeout (by
//!   [`REMOVAL_OVERSHOOT`], and longer than the sweep: 7 s for `lan`), which must remove
//!   it, from the end of the pause until every member's view holds the sleeper again, as a
//!   new member (auto-reconnect).
//! - `membership.sim1000.form_views`, `.crash10_views`, `.msgs_per_member`: the `Gms` state
//!   machines alone in virtual time ([`cohort_tests::gms_sim`]), one seed per repetition:
//!   1,000 members form (one founds, 999 join at once) — views installed until all hold
//!   the full view; after heartbeats flowed for a while 10% of them, chosen by the seed,
//!   crash — views installed until every survivor's view lacks them all; and protocol
//!   messages sent over both phases (one per recipient, heartbeats not counted) per member.
//! - `membership.sim10000.form_views`, `.crash100_views`, `.msgs_per_member`: the same at
//!   10,000 members, of which 1% (100) crash at once; one seed (a few minutes of CPU).
//! - `membership.chaos.schedules`, `.violations` (count): random fault schedules of
//!   [`cohort_tests::chaos`] over a fixed range of seeds (5–10 members formed, 10–25 s of
//!   faults, then healed), and how many of them broke an invariant.
//! - `membership.heal_to_one_view.p99` (s): over those schedules that settled, the virtual
//!   time from healing until every live member holds one view of exactly the live members.

use std::sync::Arc;
use std::time::Duration;

use cohort_membership::detector::Detector;
use cohort_membership::{AllowAll, Authenticator, MemberConfig, Preset};
use cohort_tests::Cluster;
use cohort_tests::chaos;
use cohort_tests::cluster::same_view;
use cohort_tests::gms_sim::Sim;
use cohort_transport::{MemberId, MemberKind, View};
use tokio::time::{Instant, timeout};

use crate::report::{Figure, Report};

/// The bound on every wait of this suite.
const LIMIT: Duration = Duration::from_secs(30);
/// How often a condition on the members' views is checked.
const POLL: Duration = Duration::from_millis(2);
/// The cluster size of the crash and idle figures.
const CRASH_CLUSTER: usize = 20;
/// The simulations: members, the share of them that crash at once (in percent), and the
/// figures' prefix.
const SIMULATIONS: [(usize, usize, &str, &str); 2] = [
    (1000, 10, "membership.sim1000", "crash10_views"),
    (10_000, 1, "membership.sim10000", "crash100_views"),
];

/// How much of everything to run.
struct Counts {
    /// Repetitions of the form and join figures.
    reps: usize,
    /// Victims for each of the crash- and silent-to-removal percentiles.
    kills: usize,
    /// Idle windows, and the length of each.
    idle_windows: usize,
    idle_window: Duration,
    /// Quiet time before the first idle window (connections set up, views settled).
    settle: Duration,
    /// Simulation seeds of the 1,000-member run, and of the 10,000-member one.
    seeds: Vec<u64>,
    large_seeds: Vec<u64>,
    /// Seeds of the random fault schedules.
    chaos_seeds: std::ops::Range<u64>,
    /// Trials of each pause of the pause-tolerance sweep.
    pause_trials: usize,
}

impl Counts {
    fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                reps: 3,
                kills: 3,
                idle_windows: 3,
                idle_window: Duration::from_secs(1),
                settle: Duration::from_secs(1),
                seeds: vec![1, 2, 3],
                large_seeds: vec![1],
                chaos_seeds: 0..100,
                pause_trials: 1,
            }
        } else {
            Counts {
                reps: 5,
                kills: 15,
                idle_windows: 5,
                idle_window: Duration::from_secs(4),
                settle: Duration::from_secs(3),
                seeds: vec![1, 2, 3, 4, 5],
                large_seeds: vec![1],
                chaos_seeds: 0..2000,
                pause_trials: 5,
            }
        }
    }
}

/// Measures the membership suite into `report`.
pub(crate) async fn run(quick: bool, report: &mut Report) -> Result<(), String> {
    let counts = Counts::new(quick);
    forming_and_joining(&counts, report).await?;
    idle_and_crashes(&counts, report).await?;
    pause_tolerance(&counts, report).await?;
    simulation(&counts, report).await?;
    chaos_schedules(&counts, report).await
}

/// `form.n10`, `form.n50`, `form_views.n50`, then `join_one.n50` on the last cluster of 50.
async fn forming_and_joining(counts: &Counts, report: &mut Report) -> Result<(), String> {
    let mut n10 = Vec::new();
    for _ in 0..counts.reps {
        n10.push(form(10).await?.1);
    }
    report.add(Figure::new("membership.form.n10", "s", n10));
    let (mut seconds, mut views, mut last) = (Vec::new(), Vec::new(), None);
    for _ in 0..counts.reps {
        // The previous cluster stops first, so that it takes no CPU from this one.
        drop(last.take());
        let (cluster, took, view) = form(50).await?;
        seconds.push(took);
        views.push(view.id().0 as f64);
        last = Some(cluster);
    }
    report.add(Figure::new("membership.form.n50", "s", seconds));
    report.add(Figure::new("membership.form_views.n50", "views", views));
    let mut cluster = last.ok_or("no cluster of 50 was formed")?;
    let mut joins = Vec::new();
    for k in 1..=counts.reps {
        joins.push(join_one(&mut cluster, k, 50).await?);
    }
    report.add(Figure::new("membership.join_one.n50", "s", joins));
    Ok(())
}

/// Starts one locator and `size - 1` members at once; returns the cluster, the seconds
/// until all agree on one view of `size`, and that view.
async fn form(size: usize) -> Result<(Cluster, f64, View), String> {
    form_tuned(size, |_| {}).await
}

/// [`form`] with every member configured by `tune`.
async fn form_tuned(size: usize, tune: Tune) -> Result<(Cluster, f64, View), String> {
    let mut cluster = Cluster::tuned(1, tune);
    let mut configs = vec![cluster.config(&Cluster::locator_name(1), MemberKind::Locator)];
    configs.extend((1..size).map(|i| cluster.config(&format!("member-{i}"), MemberKind::Member)));
    let started = Instant::now();
    start_all(&mut cluster, configs).await?;
    let view = agreed(&cluster, size).await?;
    let took = started.elapsed().as_secs_f64();
    Ok((cluster, took, view))
}

/// Starts these nodes at once; an error naming the first that did not start.
async fn start_all(cluster: &mut Cluster, configs: Vec<MemberConfig>) -> Result<(), String> {
    let outcomes = timeout(LIMIT, cluster.start_all(configs))
        .await
        .map_err(|_| format!("the nodes did not all start within {LIMIT:?}"))?;
    for (name, outcome) in outcomes {
        outcome.map_err(|error| format!("{name} did not start: {error}"))?;
    }
    Ok(())
}

/// One more member into the stable cluster of `size`: seconds from its start until every
/// member's view contains it. It then leaves and the `size` agree again.
async fn join_one(cluster: &mut Cluster, k: usize, size: usize) -> Result<f64, String> {
    let name = format!("joiner-{k}");
    let config = cluster.config(&name, MemberKind::Member);
    let started = Instant::now();
    let joiner = add(cluster, config).await?;
    let everyone = cluster.running();
    until_views(cluster, &everyone, &format!("every view has {name}"), |v| {
        v.contains(&joiner)
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    if !timeout(LIMIT, cluster.leave(&name)).await.unwrap_or(false) {
        return Err(format!("{name} did not leave gracefully"));
    }
    agreed(cluster, size).await?;
    Ok(took)
}

/// Starts one node (bounded) and returns its identity.
async fn add(cluster: &mut Cluster, config: MemberConfig) -> Result<MemberId, String> {
    let name = config.identity.name.clone();
    match timeout(LIMIT, cluster.add(config)).await {
        Ok(Ok(member)) => Ok(member.id().clone()),
        Ok(Err(error)) => Err(format!("{name} did not start: {error}")),
        Err(_) => Err(format!("{name} did not start within {LIMIT:?}")),
    }
}

/// `idle_bytes_per_member`, then `crash_to_removal`, `silent_to_unreachable` and
/// `silent_to_removal` (`.p50` and `.p99`), on one cluster of 20 with the default preset;
/// then the crash and silence figures again, named `….lan_fast.p50` and `.p99`, on a
/// cluster of 20 with `lan_fast` (one stage: no unreachable figure), so the trade shows.
async fn idle_and_crashes(counts: &Counts, report: &mut Report) -> Result<(), String> {
    let (mut cluster, _, view) = form(CRASH_CLUSTER).await?;
    tokio::time::sleep(counts.settle).await;
    let mut idle = Vec::new();
    for _ in 0..counts.idle_windows {
        idle.push(idle_bytes_per_member(&cluster, &view, counts.idle_window).await?);
    }
    report.add(Figure::new("membership.idle_bytes_per_member", "B/s", idle));
    crashes(counts, &mut cluster, "", report).await?;
    drop(cluster);
    let (mut cluster, _, _) = form_tuned(CRASH_CLUSTER, |c| {
        *c = c.clone().with_preset(Preset::LanFast)
    })
    .await?;
    crashes(counts, &mut cluster, ".lan_fast", report).await
}

/// The crash and silence figures of `cluster`, each name followed by `preset` (empty for
/// the default).
async fn crashes(
    counts: &Counts,
    cluster: &mut Cluster,
    preset: &str,
    report: &mut Report,
) -> Result<(), String> {
    for ending in [Ending::Crash, Ending::Silence] {
        let (mut trials, mut unreachable) = (Vec::new(), Vec::new());
        for k in 0..counts.kills {
            let (removed, flagged) = removal(cluster, ending, k).await?;
            trials.push(removed);
            unreachable.extend(flagged);
        }
        if !unreachable.is_empty() {
            let p99 = percentile(&unreachable, 0.99);
            let name = format!("membership.silent_to_unreachable{preset}");
            report.add(Figure::new(format!("{name}.p50"), "s", unreachable));
            report.add(Figure::new(format!("{name}.p99"), "s", vec![p99]));
        }
        // p50: one sample per victim, so the figure's median is the p50 over all victims
        // and its min and max are the extremes. p99: a single value, the nearest-rank 99th
        // percentile over all victims (with fewer than 100, the slowest one): splitting
        // them into batches would leave too few per batch for a p99 to mean anything.
        let p99 = percentile(&trials, 0.99);
        let name = format!("{}{preset}", ending.figure());
        report.add(Figure::new(format!("{name}.p50"), "s", trials));
        report.add(Figure::new(format!("{name}.p99"), "s", vec![p99]));
    }
    Ok(())
}

/// How a victim of [`removal`] ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Its process crashes on a host that stays up: the port closes.
    Crash,
    /// It goes silent with its port open: blackholed, nothing comes back.
    Silence,
}

impl Ending {
    fn figure(self) -> &'static str {
        match self {
            Ending::Crash => "membership.crash_to_removal",
            Ending::Silence => "membership.silent_to_removal",
        }
    }
}

/// One idle window: bytes sent per member per second. A view change during the window
/// (the cluster was not idle after all) is reported on stderr, and the window still counts.
async fn idle_bytes_per_member(
    cluster: &Cluster,
    view: &View,
    window: Duration,
) -> Result<f64, String> {
    let names = cluster.running();
    let before = bytes_sent(cluster, &names);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = bytes_sent(cluster, &names);
    let seconds = started.elapsed().as_secs_f64();
    if let Some(name) = names
        .iter()
        .find(|n| !same_view(&cluster.member(n).view(), view))
    {
        eprintln!("bench: the view changed during an idle window (seen at {name})");
    }
    let sent = after.saturating_sub(before) as f64;
    Ok(sent / names.len().max(1) as f64 / seconds)
}

/// Bytes the named members' sockets have handed to the kernel so far, summed.
fn bytes_sent(cluster: &Cluster, names: &[String]) -> u64 {
    names
        .iter()
        .map(|n| cluster.member(n).messenger().socket_stats().bytes_sent)
        .sum()
}

/// Victim number `k` of `ending`: picks it, waits for its heartbeats to flow, ends it,
/// and returns the seconds until every survivor's view lacks it and, for a silenced one,
/// until every survivor listed it as unreachable. Then a replacement joins and the cluster
/// is back to its size.
async fn removal(
    cluster: &mut Cluster,
    ending: Ending,
    k: usize,
) -> Result<(f64, Option<f64>), String> {
    // Silent victims start half-way round the ring from where the crashes started.
    let position = match ending {
        Ending::Crash => k,
        Ending::Silence => k + CRASH_CLUSTER / 2,
    };
    let victim = pick_victim(cluster, position)?;
    heartbeats_flowing(cluster, &victim).await?;
    // A heartbeat was just seen: ending the victim now would always catch it at the same
    // point of its neighbours' rounds (at first this put every crash right after one of
    // its own heartbeats, whose acknowledgement found the closed port at once). Real
    // crashes fall anywhere in a round, so victim k ends a spread fraction of a heartbeat
    // interval later.
    let member_timeout = cluster.config(&victim, MemberKind::Member).member_timeout;
    tokio::time::sleep(round_offset(k, member_timeout)).await;
    let gone = cluster.member(&victim).id().clone();
    let started = Instant::now();
    match ending {
        Ending::Crash => timeout(LIMIT, cluster.kill(&victim))
            .await
            .map_err(|_| format!("killing {victim} took over {LIMIT:?}"))?,
        Ending::Silence => cluster.faults(&victim).isolate(),
    }
    let survivors: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|n| *n != victim)
        .collect();
    let mut flagged = None;
    // In one stage (no removal timeout) a member is removed at once, never unreachable.
    let two_stages = !cluster
        .config(&victim, MemberKind::Member)
        .removal_timeout
        .is_zero();
    if let (Ending::Silence, true) = (ending, two_stages) {
        let deadline = Instant::now() + LIMIT;
        while !survivors
            .iter()
            .all(|n| cluster.member(n).unreachable().contains(&gone))
        {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{victim} was not unreachable everywhere within {LIMIT:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        flagged = Some(started.elapsed().as_secs_f64());
    }
    until_views(cluster, &survivors, &format!("{victim} is removed"), |v| {
        !v.contains(&gone)
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    if let Ending::Silence = ending {
        timeout(LIMIT, cluster.kill(&victim))
            .await
            .map_err(|_| format!("stopping {victim} took over {LIMIT:?}"))?;
    }
    let config = cluster.config(&format!("spare-{ending:?}-{k}"), MemberKind::Member);
    add(cluster, config).await?;
    agreed(cluster, CRASH_CLUSTER).await?;
    Ok((took, flagged))
}

/// Where in its neighbours' heartbeat rounds victim `k` ends: fractions of the heartbeat
/// interval at `member_timeout` spread evenly over trials (the golden-ratio sequence), so
/// that a handful of victims covers the round and a rerun ends the same ones at the same
/// points.
fn round_offset(k: usize, member_timeout: Duration) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let interval = Detector::new(member_timeout).interval();
    interval.mul_f64((k as f64 * GOLDEN).fract())
}

/// How a cluster's members are configured (`Cluster::tuned`).
type Tune = fn(&mut MemberConfig);

/// The pauses of the pause-tolerance sweep, in milliseconds.
const PAUSES_MS: [u64; 7] = [500, 1000, 1500, 2000, 3000, 4000, 5000];
/// How far past its preset's removal timeout the pause that must remove the sleeper goes.
const REMOVAL_OVERSHOOT: Duration = Duration::from_secs(2);

/// `pause_tolerance`, `pause_false_removals` and `pause_rejoin` for the `lan` and
/// `lan_fast` presets (see the module docs).
async fn pause_tolerance(counts: &Counts, report: &mut Report) -> Result<(), String> {
    let presets: [(&str, Tune); 2] = [
        ("lan", |c| *c = c.clone().with_preset(Preset::Lan)),
        ("lan_fast", |c| *c = c.clone().with_preset(Preset::LanFast)),
    ];
    for (preset, tune) in presets {
        let mut cluster = Cluster::tuned(1, tune);
        let mut configs = vec![cluster.config(&Cluster::locator_name(1), MemberKind::Locator)];
        configs.extend((1..5).map(|i| cluster.config(&format!("member-{i}"), MemberKind::Member)));
        start_all(&mut cluster, configs).await?;
        let sleeper = cluster.config("sleeper", MemberKind::Member);
        let member_timeout = sleeper.member_timeout;
        let removal_timeout = sleeper.removal_timeout;
        timeout(LIMIT, cluster.add_on_own_runtime(sleeper))
            .await
            .map_err(|_| format!("the sleeper did not start within {LIMIT:?}"))?
            .map_err(|e| format!("the sleeper did not start: {e}"))?;
        agreed(&cluster, 6).await?;
        let (mut tolerated, mut broken, mut removals, mut rejoins) = (0.0, false, 0, Vec::new());
        for pause in PAUSES_MS.map(Duration::from_millis) {
            for _ in 0..counts.pause_trials {
                match one_pause(&cluster, pause, member_timeout).await? {
                    None => {}
                    Some(rejoin) => {
                        removals += 1;
                        broken = true;
                        rejoins.push(rejoin);
                    }
                }
            }
            if !broken {
                tolerated = pause.as_secs_f64();
            }
        }
        // A pause the preset is not meant to tolerate: longer than the removal timeout
        // (and than the sweep), so the sleeper is removed and must come back by itself.
        let beyond = (removal_timeout + REMOVAL_OVERSHOOT).max(Duration::from_millis(PAUSES_MS[6]));
        for _ in 0..counts.pause_trials {
            match one_pause(&cluster, beyond, member_timeout).await? {
                Some(rejoin) => rejoins.push(rejoin),
                None => {
                    return Err(format!(
                        "{preset}: a pause of {beyond:?}, past the removal timeout of \
                         {removal_timeout:?}, did not remove the sleeper"
                    ));
                }
            }
        }
        report.add(Figure::new(
            format!("membership.pause_tolerance.{preset}"),
            "s",
            vec![tolerated],
        ));
        report.add(Figure::new(
            format!("membership.pause_false_removals.{preset}"),
            "count",
            vec![f64::from(removals)],
        ));
        if !rejoins.is_empty() {
            report.add(Figure::new(
                format!("membership.pause_rejoin.{preset}"),
                "s",
                rejoins,
            ));
        }
    }
    Ok(())
}

/// Blocks the sleeper's runtime for `pause`, then watches: `None` if it stayed (in every
/// view, and reachable everywhere, for two member timeouts running), or the seconds from
/// the end of the pause until every view holds it again as a new member if it was removed.
async fn one_pause(
    cluster: &Cluster,
    pause: Duration,
    member_timeout: Duration,
) -> Result<Option<f64>, String> {
    heartbeats_flowing(cluster, "sleeper").await?;
    let before = cluster.member("sleeper").id().clone();
    let others: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|n| n != "sleeper")
        .collect();
    let resumed = Instant::now() + pause;
    cluster.stall("sleeper", pause);
    // The pause is the fault itself, not a wait for a condition.
    tokio::time::sleep_until(resumed).await;
    let deadline = Instant::now() + LIMIT;
    let mut steady_since: Option<Instant> = None;
    loop {
        let removed = others
            .iter()
            .any(|n| !cluster.member(n).view().contains(&before));
        if removed {
            break;
        }
        let steady = others
            .iter()
            .all(|n| !cluster.member(n).unreachable().contains(&before));
        match (steady, steady_since) {
            (true, Some(since)) if since.elapsed() >= member_timeout * 2 => return Ok(None),
            (true, None) => steady_since = Some(Instant::now()),
            (false, _) => steady_since = None,
            (true, Some(_)) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("a pause of {pause:?} neither settled nor removed"));
        }
        tokio::time::sleep(POLL).await;
    }
    // Removed: it rejoins by itself as a new member.
    let name = "sleeper";
    until_views(
        cluster,
        &others,
        "the sleeper is back as a new member",
        |v| {
            v.members()
                .iter()
                .any(|m| m.name() == name && m.uuid() != before.uuid())
        },
    )
    .await?;
    let back = resumed.elapsed().as_secs_f64();
    agreed(cluster, 6).await?;
    Ok(Some(back))
}

/// An ordinary member (not a locator), a different ring position for each `k`.
fn pick_victim(cluster: &Cluster, k: usize) -> Result<String, String> {
    let names = cluster.running();
    let first = names.first().ok_or("no node is running")?;
    let view = cluster.member(first).view();
    let candidates: Vec<&MemberId> = view
        .members()
        .iter()
        .filter(|m| m.kind() == MemberKind::Member)
        .collect();
    if candidates.is_empty() {
        return Err("no ordinary member to kill".into());
    }
    Ok(candidates[(7 * k + 3) % candidates.len()].name().to_owned())
}

/// Waits until heartbeats flow both ways between `name` and its ring neighbours (the
/// members that watch it) since now, i.e. under the current view: its successor received
/// one from it, and it received one from its predecessor (whose QUIC acknowledgement is
/// the predecessor's sign of life from it). Then waits one more heartbeat interval so that
/// their detectors have taken it in. A neighbour never heard from gets five member timeouts
/// of grace by design; this suite measures the ordinary case.
async fn heartbeats_flowing(cluster: &Cluster, name: &str) -> Result<(), String> {
    cluster.heartbeats_flowing(name, LIMIT).await?;
    let interval = cluster.config("probe", MemberKind::Member).member_timeout / 5;
    tokio::time::sleep(interval).await;
    Ok(())
}

/// Waits until every running node holds the same view of `size` members; returns it.
async fn agreed(cluster: &Cluster, size: usize) -> Result<View, String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let views: Vec<View> = cluster
            .running()
            .iter()
            .map(|n| cluster.member(n).view())
            .collect();
        if let Some(first) = views.first()
            && first.len() == size
            && views.iter().all(|v| same_view(v, first))
        {
            return Ok(first.clone());
        }
        if Instant::now() >= deadline {
            let ids: Vec<String> = views
                .iter()
                .map(|v| format!("{}/{}", v.id(), v.len()))
                .collect();
            return Err(format!(
                "no agreement on a view of {size} within {LIMIT:?} (views: {})",
                ids.join(" ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `holds` is true of every named node's view; an error naming `what` after
/// [`LIMIT`].
async fn until_views(
    cluster: &Cluster,
    names: &[String],
    what: &str,
    holds: impl Fn(&View) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT;
    while !names.iter().all(|n| holds(&cluster.member(n).view())) {
        if Instant::now() >= deadline {
            return Err(format!("not within {LIMIT:?}: {what}"));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// The nearest-rank percentile `p` (0..=1) of `values`; NaN with none.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

/// What one seed of the simulation found.
struct SimOutcome {
    form_views: f64,
    crash_views: f64,
    messages_per_member: f64,
}

/// `sim1000.*` and `sim10000.*` (form views, crash views, messages per member): one seed
/// per repetition, each on a blocking thread (the simulation is pure computation).
async fn simulation(counts: &Counts, report: &mut Report) -> Result<(), String> {
    for (size, crash_percent, prefix, crash_name) in SIMULATIONS {
        let seeds = if size > 1000 {
            &counts.large_seeds
        } else {
            &counts.seeds
        };
        let (mut form, mut crash, mut messages) = (Vec::new(), Vec::new(), Vec::new());
        for &seed in seeds {
            let outcome = tokio::task::spawn_blocking(move || simulate(seed, size, crash_percent))
                .await
                .map_err(|error| {
                    format!(
                        "simulation of {size}, seed {seed}: {}",
                        panic_message(error)
                    )
                })??;
            form.push(outcome.form_views);
            crash.push(outcome.crash_views);
            messages.push(outcome.messages_per_member);
        }
        report.add(Figure::new(format!("{prefix}.form_views"), "views", form));
        report.add(Figure::new(
            format!("{prefix}.{crash_name}"),
            "views",
            crash,
        ));
        report.add(Figure::new(
            format!("{prefix}.msgs_per_member"),
            "msgs",
            messages,
        ));
    }
    Ok(())
}

/// `chaos.schedules`, `chaos.violations`, `heal_to_one_view.p99`: one sweep over the seed
/// range, on a blocking thread. A violation is a finding to fix, not a failure of the
/// benchmark: it is counted, and the failing seeds are listed on standard error (each
/// replays with `COHORT_CHAOS_SEED`, see `tests/tests/gms_chaos.rs`).
async fn chaos_schedules(counts: &Counts, report: &mut Report) -> Result<(), String> {
    let seeds = counts.chaos_seeds.clone();
    let sweep = tokio::task::spawn_blocking(move || chaos::sweep(seeds))
        .await
        .map_err(|error| format!("chaos schedules: {}", panic_message(error)))?;
    if !sweep.failures.is_empty() {
        eprintln!("chaos: {}", sweep.summary());
    }
    let heal: Vec<f64> = sweep.heal_times.iter().map(Duration::as_secs_f64).collect();
    let count = |n: usize| vec![n as f64];
    report.add(Figure::new(
        "membership.chaos.schedules",
        "count",
        count(sweep.schedules as usize),
    ));
    report.add(Figure::new(
        "membership.chaos.violations",
        "count",
        count(sweep.failures.len()),
    ));
    report.add(Figure::new(
        "membership.heal_to_one_view.p99",
        "s",
        vec![percentile(&heal, 0.99)],
    ));
    Ok(())
}

/// 1,000 members form, heartbeats flow, 10% crash and are removed (see the module docs).
fn simulate(seed: u64, size: usize, crash_percent: usize) -> Result<SimOutcome, String> {
    let mut sim = Sim::new(seed);
    let allow: Arc<dyn Authenticator> = Arc::new(AllowAll);
    // Forming 10,000 members takes longer than the suite's usual bound, in virtual time.
    let limit = LIMIT * (size / 1000).max(1) as u32;
    let members = sim.try_form(size, &allow, limit)?;
    sim.try_run_until(
        "every member holds the full view",
        limit,
        all_hold_views_of(&members, size),
    )?;
    let form_views = sim.invariants.len();
    // Heartbeats flow for a while: a neighbour never heard from gets a longer grace.
    let settled = sim.now + Duration::from_secs(2);
    sim.try_run_until("heartbeats flow", LIMIT, |s| s.now >= settled)?;
    let victims = crash_some(&mut sim, &members, crash_percent);
    let live: Vec<usize> = members
        .iter()
        .copied()
        .filter(|i| !victims.contains(i))
        .collect();
    let before = sim.invariants.len();
    // No joins meanwhile: a view of exactly the survivors' count lacks every victim.
    sim.try_run_until(
        "every crashed member is removed",
        LIMIT,
        all_hold_views_of(&live, live.len()),
    )?;
    Ok(SimOutcome {
        form_views: form_views as f64,
        crash_views: (sim.invariants.len() - before) as f64,
        messages_per_member: sim.messages_sent as f64 / size as f64,
    })
}

/// Crashes a seeded choice of `percent`% of `members` (the coordinator may be among them);
/// returns their indices.
fn crash_some(sim: &mut Sim, members: &[usize], percent: usize) -> Vec<usize> {
    let mut pool = members.to_vec();
    let mut victims = Vec::new();
    while victims.len() < members.len() * percent / 100 && !pool.is_empty() {
        let pick = (sim.random() % pool.len() as u64) as usize;
        let victim = pool.swap_remove(pick);
        sim.dead[victim] = true;
        victims.push(victim);
    }
    victims
}

/// A condition for [`Sim::try_run_until`]: every one of `members` holds a view of `size`.
/// It looks only after an installation, since with 10,000 members a scan at every step
/// would be most of the work.
fn all_hold_views_of(members: &[usize], size: usize) -> impl FnMut(&Sim) -> bool + '_ {
    let mut looked_at = None;
    move |sim| {
        if looked_at == Some(sim.views_installed) {
            return false;
        }
        looked_at = Some(sim.views_installed);
        members
            .iter()
            .all(|&i| sim.members[i].view().is_some_and(|v| v.len() == size))
    }
}

/// The panic message of a failed blocking task, if it has one.
fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .map_or("panicked".into(), |m| format!("panicked: {m}")),
        Err(error) => error.to_string(),
    }
}
