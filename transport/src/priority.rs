//! Message priorities: which stream of a connection carries a message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The priority of a reliable message. Each priority has its own ordered stream per peer,
/// so a large Bulk transfer never delays Control or High messages behind it.
///
/// The numeric values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Priority {
    /// Reserved for the membership protocol; carried on the control stream.
    Control = 0,
    /// Urgent application messages.
    High = 1,
    /// Ordinary application messages.
    Normal = 2,
    /// Large transfers; bounded in flight so they never hold back the others.
    Bulk = 3,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Control,
        Priority::High,
        Priority::Normal,
        Priority::Bulk,
    ];

    /// Index into per-priority arrays (`0..4`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The priority with this wire value, if any.
    pub fn from_wire(value: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(value)).copied()
    }

    /// The QUIC stream priority (higher is sent first).
    pub(crate) fn stream_priority(self) -> i32 {
        3 - self as i32
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Priority::Control => "control",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_are_stable() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_wire(p as u8), Some(p));
        }
        assert_eq!(Priority::from_wire(4), None);
        assert!(Priority::Control.stream_priority() > Priority::Bulk.stream_priority());
    }
}
