//! Auto-reconnect: the supervisor that runs one driver per incarnation of a member, and
//! brings a member that was forced out back as a new one.
//!
//! ```text
//! supervise ─► driver (first incarnation) ─► ends ─┬─ left, dropped, not admitted ─► stop
//!                                                   └─ ForcedOut{me, reason}, auto_reconnect
//! reconnect ─► Backoff: discovery_interval, ×2 per try up to BACKOFF_CAP, 75-100% jitter
//!   ─► release: a stand-in (no socket) takes the slot, the old messenger is dropped
//!   ─► bind the same address again (retried while the port is being released): a new uuid
//!      ─► identity pushed, FindCoordinator, ViewCheck and FinalCheck served, subscriptions
//!         relayed (the old identity is answered "out" from now on)
//!   ─► one discovery round per backoff step (locators and the members of the last view),
//!      never founding ─► Join(coordinator)
//!   ─► a new Gms joins ─► a new driver: admitted ─► Reconnected{old, new, reason}
//!                                      not admitted (refused, timed out) ─► next try, new uuid
//! Member::leave or drop, at any point ─► stop for good
//! ```
//!
//! Why a new uuid: a removed member stays out (a process's uuid is never admitted again
//! once a view removed it), so the member comes back as a new member with its old name and
//! address, which the coordinator takes for a restart of the same process.
//!
//! Why it never founds a cluster: a member is forced out when its side of a partition lost
//! its quorum, and may still be cut off from the side that kept it. A locator that founded
//! a cluster of its own when nobody answered would split the cluster for good, so a
//! reconnecting member waits until a cluster answers (discovery's round 0 never founds).
//!
//! Why the members of the last view are asked too: the majority carries on with them, and
//! the member may have been configured with a locator that is gone.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_transport::{ClusterTls, MemberId, Messenger};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::gms_config;
use super::discover::{self, Failure, Found};
use super::relay::Relays;
use super::{
    Command, Driver, Ending, Inputs, MemberConfig, Shared, Slot, StartError, attach, bind,
    port_in_use, transport,
};
use crate::gms::Gms;

/// The longest wait between two reconnect attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(3);
/// How long a reconnect waits for the previous messenger's port to be released before the
/// bind counts as failed. The socket closes once the last handle is gone and QUIC has
/// finished draining the connections the shutdown closed (three probe timeouts: about 3 s
/// for a connection still in its handshake, measured 2-3 s after a stall).
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// How often it tries the port meanwhile.
const RELEASE_POLL: Duration = Duration::from_millis(10);

/// What a member needs to come back, for the whole life of the [`Member`](super::Member).
pub(super) struct Life {
    /// The member's configuration, with `bind` set to the address it had.
    pub(super) config: MemberConfig,
    pub(super) tls: ClusterTls,
    pub(super) shared: Arc<Shared>,
    pub(super) slot: Arc<Slot>,
    pub(super) relays: Option<Arc<Relays>>,
    pub(super) view_file: Option<PathBuf>,
}

/// Runs `first`, then, each time an incarnation is forced out and auto-reconnect is on,
/// the incarnations that replace it; returns when the member has stopped for good.
pub(super) async fn supervise(
    life: Life,
    first: Driver,
    inputs: Inputs,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut ending = first.run(inputs, &mut commands).await;
    while let Ending::ForcedOut { me, reason } = ending {
        if !life.config.auto_reconnect {
            break;
        }
        ending = life.reconnect(me, reason, &mut commands).await;
    }
    if let Some(relays) = &life.relays {
        relays.close();
    }
}

/// The member asked to stop (leave, or the `Member` dropped) while it was out.
struct Stop;

impl Life {
    /// Brings the member forced out as `old` back as a new incarnation, and runs it until
    /// it ends.
    async fn reconnect(
        &self,
        old: MemberId,
        reason: String,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Ending {
        tracing::info!(member = ?old, "forced out: reconnecting");
        let seed = old.uuid().as_u64_pair().0;
        let mut backoff = Backoff::new(self.config.discovery_interval, BACKOFF_CAP, seed);
        let stand_in =
            match transport::stand_in(&old, self.config.transport.clone(), &self.tls).await {
                Ok(stand_in) => stand_in,
                Err(error) => {
                    tracing::error!(member = ?old, %error, "cannot reconnect: staying out");
                    return Ending::Finished;
                }
            };
        let last_view = self.shared.view.borrow().clone();
        loop {
            let Ok((messenger, inputs)) =
                or_stop(self.incarnate(&stand_in, &mut backoff), commands).await
            else {
                return Ending::Finished;
            };
            let me = messenger.local_member().clone();
            let targets = discover::targets(&self.config.locators, Some(&last_view), &me);
            let coordinator = loop {
                let delay = backoff.next();
                let started = Instant::now();
                // One round, bounded by the wait before the next one.
                let round = discover::run(
                    &messenger,
                    &me,
                    &self.config.locators,
                    &targets,
                    (delay, self.config.transport.handshake_timeout),
                    started + delay,
                );
                match or_stop(round, commands).await {
                    Err(Stop) => {
                        messenger.shutdown().await;
                        return Ending::Finished;
                    }
                    Ok(Ok(Found::Cluster(coordinator))) => break coordinator,
                    Ok(Ok(Found::Nothing) | Err(Failure::Silence(_) | Failure::Unfounded(_))) => {}
                    Ok(Err(Failure::Refused { by, reason })) => {
                        tracing::warn!(member = ?me, %by, %reason, "refused while reconnecting");
                    }
                }
                let waited = tokio::time::sleep_until(started + delay);
                if or_stop(waited, commands).await.is_err() {
                    messenger.shutdown().await;
                    return Ending::Finished;
                }
            };
            tracing::info!(member = ?me, ?coordinator, "rejoining");
            let mut gms = Gms::new(
                me.clone(),
                gms_config(&self.config, self.config.join_timeout),
                self.config.authenticator.clone(),
            );
            gms.join(
                Instant::now().into_std(),
                coordinator.clone(),
                self.config.credentials.clone(),
            );
            let mut driver =
                Driver::new(gms, messenger, &inputs, self.shared.clone(), &self.config);
            driver.view_file = self.view_file.clone();
            driver.coordinator = Some(coordinator);
            driver.reconnected = Some((old.clone(), reason.clone()));
            match driver.run(inputs, commands).await {
                // Refused or timed out: the next try is a new member again.
                Ending::NotAdmitted => {}
                ending => return ending,
            }
        }
    }

    /// Releases the previous messenger and binds a new one at the member's address, trying
    /// again after each backoff step until it works; publishes it as the current
    /// incarnation.
    async fn incarnate(&self, stand_in: &Messenger, backoff: &mut Backoff) -> (Messenger, Inputs) {
        loop {
            // The old messenger (or that of a try that failed) must be gone entirely before
            // its port can be bound again; the driver has shut it down already.
            drop(self.slot.replace(stand_in.clone()));
            match self.bind_released().await {
                Ok(messenger) => {
                    // Before anything is served: discovery answers name the current id.
                    self.shared.ids.push(messenger.local_member().clone());
                    match attach(&self.shared, &messenger) {
                        Ok(inputs) => {
                            self.install(&messenger);
                            return (messenger, inputs);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "a new messenger could not be used");
                            messenger.shutdown().await;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(address = %self.config.identity.bind, %error, "cannot bind to reconnect");
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    /// Binds the member's address, waiting (bounded) while the previous messenger's port is
    /// still being released.
    async fn bind_released(&self) -> Result<Messenger, StartError> {
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match bind(&self.config, &self.tls) {
                Err(error) if port_in_use(&error) && Instant::now() < deadline => {
                    tokio::time::sleep(RELEASE_POLL).await;
                }
                Err(error) if port_in_use(&error) => {
                    tracing::warn!(
                        address = %self.config.identity.bind,
                        waited = ?RELEASE_WAIT,
                        "the port is still in use: by another process, or by a clone of \
                         the old messenger (Member::messenger) kept somewhere"
                    );
                    return Err(error);
                }
                other => return other,
            }
        }
    }

    /// Makes `messenger` the current one, with the application's subscriptions on it.
    fn install(&self, messenger: &Messenger) {
        let replace = || self.slot.replace(messenger.clone());
        let previous = match &self.relays {
            Some(relays) => relays.switch(messenger, replace),
            None => replace(),
        };
        drop(previous);
    }
}

/// Runs `work` while answering the member's commands: there is no cluster to suspect
/// anyone to while out of it, and a leave (or the `Member` dropped) ends the wait.
async fn or_stop<F: Future>(
    work: F,
    commands: &mut mpsc::Receiver<Command>,
) -> Result<F::Output, Stop> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Ok(output),
            command = commands.recv() => match command {
                Some(Command::Leave(reply)) => {
                    // Not in a view: nothing to leave.
                    let _ = reply.send(false);
                    return Err(Stop);
                }
                Some(Command::Suspect(..)) => {}
                None => return Err(Stop),
            },
        }
    }
}

/// Waits between reconnect attempts: from `first`, doubled each time up to `cap`, each wait
/// 75-100% of its step (seeded jitter, so that the members of one side, forced out
/// together, do not ask in lockstep).
pub(super) struct Backoff {
    step: Duration,
    cap: Duration,
    state: u64,
}

impl Backoff {
    pub(super) fn new(first: Duration, cap: Duration, seed: u64) -> Self {
        // A splitmix64 step spreads seeds that differ in a bit or two (uuids of members forced
        // out together may not); xorshift needs a state other than zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Backoff {
            step: first,
            cap: cap.max(first),
            state: (z ^ (z >> 31)) | 1,
        }
    }

    /// The next wait.
    pub(super) fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = self.step.saturating_mul(2).min(self.cap);
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        // The top 53 bits as a fraction in [0, 1).
        let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        step.mul_f64(0.75 + 0.25 * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_bounded_jitter() {
        let first = Duration::from_millis(300);
        let cap = Duration::from_secs(3);
        let mut backoff = Backoff::new(first, cap, 42);
        let steps = [300, 600, 1200, 2400, 3000, 3000, 3000];
        for step in steps {
            let step = Duration::from_millis(step);
            let wait = backoff.next();
            assert!(
                wait >= step.mul_f64(0.75) && wait <= step,
                "{wait:?} for a step of {step:?}"
            );
        }
        let mut other = Backoff::new(first, cap, 43);
        let mut same = Backoff::new(first, cap, 42);
        let a: Vec<Duration> = (0..5).map(|_| same.next()).collect();
        let b: Vec<Duration> = (0..5).map(|_| other.next()).collect();
        assert_ne!(a, b, "another seed, other waits");
    }

    #[test]
    fn a_first_step_beyond_the_cap_is_kept() {
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(3), 1);
        assert!(backoff.next() >= Duration::from_secs(7));
        assert!(backoff.next() <= Duration::from_secs(10));
    }
}
