//! [`Identities`]: every identity a [`Member`](super::Member) has had, oldest first.
//!
//! ```text
//! Member::start ─► Identities::new(first id)
//! each reconnect ─► push(new id)            (the supervisor task: the only writer)
//! Member::id ─► current(): the newest, as a reference valid for as long as the Member
//! a final check of a uuid ─► contains(uuid): was it ever this member's?
//! ```
//!
//! [`Member::id`](super::Member::id) hands out `&MemberId`, so an identity must stay where it
//! is while the next one is added. They are kept in chunks that never move (chunk `i` holds
//! `2^i` identities and is allocated when first needed), so reading the newest is constant
//! time, needs no lock and no unsafe code. Each reconnect keeps one more `MemberId` (a
//! pointer to a few hundred bytes) for the life of the member.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use cohort_transport::MemberId;
use uuid::Uuid;

/// Chunks of `1, 2, 4, ...` identities after the first: room for 2^40 reconnects.
const CHUNKS: usize = 40;

type Chunk = Box<[OnceLock<MemberId>]>;

/// Every identity of one member, append-only.
pub(super) struct Identities {
    first: MemberId,
    later: [OnceLock<Chunk>; CHUNKS],
    /// Identities after the first that are set (readers never look beyond).
    added: AtomicUsize,
}

impl Identities {
    pub(super) fn new(first: MemberId) -> Self {
        Identities {
            first,
            later: [const { OnceLock::new() }; CHUNKS],
            added: AtomicUsize::new(0),
        }
    }

    /// The newest identity.
    pub(super) fn current(&self) -> &MemberId {
        match self.added.load(Ordering::Acquire) {
            0 => &self.first,
            n => self
                .cell(n - 1)
                .and_then(OnceLock::get)
                .unwrap_or(&self.first),
        }
    }

    /// True if `uuid` is, or was, one of this member's identities. Linear in the number of
    /// reconnects, which stays small.
    pub(super) fn contains(&self, uuid: Uuid) -> bool {
        self.first.uuid() == uuid
            || (0..self.added.load(Ordering::Acquire)).any(|n| {
                self.cell(n)
                    .and_then(OnceLock::get)
                    .is_some_and(|id| id.uuid() == uuid)
            })
    }

    /// Appends `id`, which becomes the current identity. One writer only (the supervisor):
    /// the slot is set before the count says it is there.
    pub(super) fn push(&self, id: MemberId) {
        let n = self.added.load(Ordering::Acquire);
        let (chunk, _) = locate(n);
        let Some(chunks) = self.later.get(chunk) else {
            tracing::error!(?id, "no room for another identity: keeping the last one");
            return;
        };
        let cells = chunks.get_or_init(|| (0..1usize << chunk).map(|_| OnceLock::new()).collect());
        let (_, offset) = locate(n);
        if cells.get(offset).is_some_and(|cell| cell.set(id).is_ok()) {
            self.added.store(n + 1, Ordering::Release);
        }
    }

    fn cell(&self, n: usize) -> Option<&OnceLock<MemberId>> {
        let (chunk, offset) = locate(n);
        self.later.get(chunk)?.get()?.get(offset)
    }
}

/// The chunk and offset of the `n`th identity after the first (from 0): chunk `i` starts at
/// `2^i - 1`.
fn locate(n: usize) -> (usize, usize) {
    let position = n + 1;
    let chunk = (usize::BITS - 1 - position.leading_zeros()) as usize;
    (chunk, position - (1 << chunk))
}

#[cfg(test)]
mod tests {
    use cohort_transport::MemberKind;

    use super::*;

    fn id(i: u16) -> MemberId {
        MemberId::new(
            "m",
            format!("127.0.0.1:{}", 1000 + i).parse().expect("literal"),
            MemberKind::Member,
        )
    }

    #[test]
    fn chunks_double_and_never_overlap() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1), (1, 0));
        assert_eq!(locate(2), (1, 1));
        assert_eq!(locate(3), (2, 0));
        assert_eq!(locate(6), (2, 3));
        assert_eq!(locate(7), (3, 0));
    }

    #[test]
    fn the_newest_is_current_and_earlier_references_stay_valid() {
        let first = id(0);
        let ids = Identities::new(first.clone());
        let held = ids.current();
        assert_eq!(*held, first);
        let all: Vec<MemberId> = (1..=100).map(id).collect();
        for next in &all {
            ids.push(next.clone());
            assert_eq!(ids.current(), next);
        }
        assert_eq!(
            *held, first,
            "a reference taken earlier still reads the same"
        );
        for (n, expected) in all.iter().enumerate() {
            assert_eq!(ids.cell(n).and_then(OnceLock::get), Some(expected));
        }
        assert!(ids.contains(first.uuid()) && all.iter().all(|id| ids.contains(id.uuid())));
        assert!(!ids.contains(id(101).uuid()), "never this member's");
    }
}
