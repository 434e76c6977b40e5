//! Faults on directed links (a→b): the active faults, and what they add up to per link.
//!
//! ```text
//! Chaos::cut / partition / loss / delay / duplicate / flap ─► Links::add(LinkFault) ─► FaultId
//!        recomputed per link on every change ─► Link { cut, loss, extra_delay, duplicate }
//! every transmission (message, heartbeat) ─► Links::link(a, b) ─► dropped / delayed / doubled
//! Chaos::lift(FaultId), a timed lift, or Chaos::heal ─► removed, links recomputed
//! ```
//!
//! Faults overlap freely: a link is cut while any fault cuts it, and loss, duplication and
//! extra delay are the largest of those active. A flapping fault stays registered and is
//! switched on and off; while off it adds nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// Identifies an active link fault, to lift it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub(crate) u64);

/// What a fault does to each of its links.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Effect {
    /// Nothing gets through.
    Cut,
    /// Each transmission is lost with this probability.
    Loss(f64),
    /// Each transmission waits up to this much longer (uniformly), so later ones overtake.
    Delay(Duration),
    /// Each transmission is delivered a second time (with its own latency) with this
    /// probability.
    Duplicate(f64),
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Cut => f.write_str("cut"),
            Effect::Loss(p) => write!(f, "{:.0}% loss", p * 100.0),
            Effect::Delay(d) => write!(f, "up to {d:?} extra delay"),
            Effect::Duplicate(p) => write!(f, "{:.0}% duplication", p * 100.0),
        }
    }
}

/// One active fault: an effect on a set of directed links.
#[derive(Clone, Debug)]
struct LinkFault {
    effect: Effect,
    links: Vec<(usize, usize)>,
    /// False while a flapping fault is in its open phase.
    on: bool,
}

/// What the active faults add up to on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Link {
    /// Nothing gets through.
    pub(crate) cut: bool,
    /// Probability that a transmission is lost.
    pub(crate) loss: f64,
    /// Largest extra delay.
    pub(crate) extra_delay: Duration,
    /// Probability that a transmission arrives twice.
    pub(crate) duplicate: f64,
}

/// Every active link fault. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Links {
    faults: BTreeMap<FaultId, LinkFault>,
    next: u64,
    /// The sum of `faults` per link; links without faults are absent.
    links: HashMap<(usize, usize), Link>,
}

impl Links {
    /// Registers a fault on `links`; it is active at once.
    pub(crate) fn add(&mut self, effect: Effect, links: Vec<(usize, usize)>) -> FaultId {
        self.next += 1;
        let id = FaultId(self.next);
        self.faults.insert(
            id,
            LinkFault {
                effect,
                links,
                on: true,
            },
        );
        self.recompute();
        id
    }

    /// Removes a fault; false if it was not active (lifted already, or healed).
    pub(crate) fn lift(&mut self, id: FaultId) -> bool {
        let lifted = self.faults.remove(&id).is_some();
        if lifted {
            self.recompute();
        }
        lifted
    }

    /// Switches a flapping fault on or off; false if it is no longer registered.
    pub(crate) fn switch(&mut self, id: FaultId) -> Option<bool> {
        let fault = self.faults.get_mut(&id)?;
        fault.on = !fault.on;
        let on = fault.on;
        self.recompute();
        Some(on)
    }

    /// Removes every fault.
    pub(crate) fn clear(&mut self) {
        self.faults.clear();
        self.links.clear();
    }

    /// What the faults do to the link `from`→`to`.
    pub(crate) fn link(&self, from: usize, to: usize) -> Link {
        self.links.get(&(from, to)).copied().unwrap_or_default()
    }

    /// True if neither direction between `a` and `b` is cut (what a final check needs: a
    /// handshake goes both ways).
    pub(crate) fn open_both(&self, a: usize, b: usize) -> bool {
        !self.link(a, b).cut && !self.link(b, a).cut
    }

    fn recompute(&mut self) {
        self.links.clear();
        for fault in self.faults.values().filter(|f| f.on) {
            for link in &fault.links {
                let state = self.links.entry(*link).or_default();
                match fault.effect {
                    Effect::Cut => state.cut = true,
                    Effect::Loss(p) => state.loss = state.loss.max(p),
                    Effect::Delay(d) => state.extra_delay = state.extra_delay.max(d),
                    Effect::Duplicate(p) => state.duplicate = state.duplicate.max(p),
                }
            }
        }
    }
}
