//! The in-flight budget: positions and bytes accepted but not yet durable.
//!
//! A request takes a [`Permit`] before its positions enter the pipeline; the
//! permit travels with the positions into the batcher and the writer and is
//! released only when the record holding them is written or given up. So the
//! memory between the HTTP workers and the stream is bounded, and a full
//! pipeline turns into `503` at the edge instead of growth.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::Metrics;

/// Limits and counters.
pub struct Budget {
    positions: AtomicUsize,
    bytes: AtomicUsize,
    max_positions: usize,
    max_bytes: usize,
    metrics: Metrics,
}

impl Budget {
    /// A budget with the given limits.
    pub fn new(max_positions: usize, max_bytes: usize, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            positions: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_positions,
            max_bytes,
            metrics,
        })
    }

    /// Reserves room, or `None` when it would exceed a limit.
    pub fn try_acquire(self: &Arc<Self>, positions: usize, bytes: usize) -> Option<Permit> {
        let before = self.positions.fetch_add(positions, Ordering::AcqRel);
        let before_bytes = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + positions > self.max_positions || before_bytes + bytes > self.max_bytes {
            self.positions.fetch_sub(positions, Ordering::AcqRel);
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        self.publish();
        Some(Permit {
            budget: Arc::clone(self),
            positions,
            bytes,
        })
    }

    /// Positions currently held.
    pub fn positions_in_use(&self) -> usize {
        self.positions.load(Ordering::Acquire)
    }

    /// Share of the tighter limit in use, 0.0 to 1.0.
    pub fn utilization(&self) -> f64 {
        let p = self.positions.load(Ordering::Acquire) as f64 / self.max_positions as f64;
        let b = self.bytes.load(Ordering::Acquire) as f64 / self.max_bytes as f64;
        p.max(b)
    }

    fn publish(&self) {
        self.metrics
            .inflight_positions
            .set(self.positions.load(Ordering::Relaxed) as i64);
        self.metrics
            .inflight_bytes
            .set(self.bytes.load(Ordering::Relaxed) as i64);
    }
}

/// Room held in the budget; released on drop.
pub struct Permit {
    budget: Arc<Budget>,
    positions: usize,
    bytes: usize,
}

impl Permit {
    /// Splits off a part of this permit (saturating).
    pub fn split(&mut self, positions: usize, bytes: usize) -> Permit {
        let positions = positions.min(self.positions);
        let bytes = bytes.min(self.bytes);
        self.positions -= positions;
        self.bytes -= bytes;
        Permit {
            budget: Arc::clone(&self.budget),
            positions,
            bytes,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget
            .positions
            .fetch_sub(self.positions, Ordering::AcqRel);
        self.budget.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_refused_past_the_limit_and_returned_on_drop() {
        let budget = Budget::new(10, 1000, Metrics::new());
        let mut a = budget.try_acquire(6, 100).expect("room");
        assert!(budget.try_acquire(5, 100).is_none());
        let b = a.split(3, 50);
        drop(a);
        assert_eq!(budget.positions_in_use(), 3);
        assert!(budget.try_acquire(7, 100).is_some());
        drop(b);
        assert_eq!(budget.positions_in_use(), 0);
    }
}
