//! The latest-position tracker: actor state sharded by courier. Each shard
//! keeps, per courier, the accepted position with the greatest `recorded_at`
//! (device time, not arrival order), and forgets couriers silent for longer
//! than the TTL.
//!
//! Each shard holds at most `max_couriers` couriers: a new courier beyond
//! that evicts the one that has been silent longest (least recently
//! observed), counted in `ingest_tracker_evictions_total`. Recency is kept in
//! an append-only log of (sequence, courier) with stale entries skipped when
//! evicting and compacted away once they outnumber the live ones, so every
//! observation costs amortised O(1).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use courier_model::position::Position;

use crate::metrics::Metrics;

/// Accepted positions to remember.
pub struct Observe(pub Vec<Position>);

impl Message for Observe {
    type Result = ();
}

/// The latest position of a courier.
pub struct Latest(pub String);

impl Message for Latest {
    type Result = Option<Position>;
}

/// The couriers of this shard within a radius (embedded nearby query):
/// at most `limit`, nearest first, with their distance in metres.
pub struct Near(pub crate::store::NearQuery);

impl Message for Near {
    type Result = Vec<(crate::store::StoredPosition, f64)>;
}

/// Forget a courier now (erasure); whether it was known.
pub struct Forget(pub String);

impl Message for Forget {
    type Result = bool;
}

impl Handler<Forget> for Tracker {
    type Result = bool;

    fn handle(&mut self, msg: Forget, _: &mut Self::Context) -> Self::Result {
        let known = self.latest.remove(msg.0.as_str()).is_some();
        if known {
            self.metrics.tracked_couriers.dec();
            // Its entries in `recency` are stale now; compaction drops them.
            self.compact();
        }
        known
    }
}

struct Entry {
    position: Position,
    /// Sequence of the courier's last observation (its entry in `recency`).
    seen: u64,
    /// The map's key, shared with `recency`.
    key: Arc<str>,
}

/// Courier ids are short strings from clients: foldhash, seeded at random
/// per map, is several times faster than SipHash on them and still keeps
/// crafted ids from piling into one bucket.
type Couriers = HashMap<Arc<str>, Entry, foldhash::fast::RandomState>;

/// One tracker shard.
pub struct Tracker {
    latest: Couriers,
    recency: VecDeque<(u64, Arc<str>)>,
    next_seen: u64,
    max_couriers: usize,
    ttl: Duration,
    metrics: Metrics,
}

impl Tracker {
    /// An empty shard holding at most `max_couriers` couriers (at least 1).
    pub fn new(ttl: Duration, max_couriers: usize, metrics: Metrics) -> Self {
        Self {
            latest: Couriers::default(),
            recency: VecDeque::new(),
            next_seen: 0,
            max_couriers: max_couriers.max(1),
            ttl,
            metrics,
        }
    }

    fn sweep(&mut self) {
        let Ok(ttl) = chrono::TimeDelta::from_std(self.ttl) else {
            return;
        };
        let cutoff = Utc::now() - ttl;
        let before = self.latest.len();
        self.latest.retain(|_, e| e.position.received_at >= cutoff);
        self.metrics
            .tracked_couriers
            .sub((before - self.latest.len()) as i64);
        self.compact();
    }

    /// Drops log entries that no longer name a courier's last observation,
    /// once they outnumber the live ones.
    fn compact(&mut self) {
        if self.recency.len() <= 2 * self.latest.len() + 64 {
            return;
        }
        let latest = &self.latest;
        self.recency
            .retain(|(seen, key)| latest.get(key).is_some_and(|e| e.seen == *seen));
    }

    /// Forgets the courier observed least recently.
    fn evict_oldest(&mut self) {
        while let Some((seen, key)) = self.recency.pop_front() {
            if self.latest.get(&key).is_some_and(|e| e.seen == seen) {
                self.latest.remove(&key);
                self.metrics.tracked_couriers.dec();
                self.metrics.tracker_evictions.inc();
                tracing::debug!(courier = %key, "tracker full; forgot the courier silent longest");
                return;
            }
        }
    }

    fn observe(&mut self, position: Position) {
        let seen = self.next_seen;
        self.next_seen += 1;
        match self.latest.get_mut(position.courier_id.as_str()) {
            Some(entry) => {
                if position.recorded_at > entry.position.recorded_at {
                    entry.position = position;
                }
                entry.seen = seen;
                self.recency.push_back((seen, Arc::clone(&entry.key)));
            }
            None => {
                let key: Arc<str> = Arc::from(position.courier_id.as_str());
                self.metrics.tracked_couriers.inc();
                self.latest.insert(
                    Arc::clone(&key),
                    Entry {
                        position,
                        seen,
                        key: Arc::clone(&key),
                    },
                );
                self.recency.push_back((seen, key));
                if self.latest.len() > self.max_couriers {
                    self.evict_oldest();
                }
            }
        }
        self.compact();
    }
}

impl Actor for Tracker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = (self.ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(every, |act, _| act.sweep());
    }
}

impl Handler<Observe> for Tracker {
    type Result = ();

    fn handle(&mut self, msg: Observe, _: &mut Self::Context) {
        for position in msg.0 {
            self.observe(position);
        }
    }
}

impl Handler<Latest> for Tracker {
    type Result = Option<Position>;

    fn handle(&mut self, msg: Latest, _: &mut Self::Context) -> Self::Result {
        self.latest.get(msg.0.as_str()).map(|e| e.position.clone())
    }
}

impl super::Pipeline {
    /// The tracker shards (the embedded position store's nearby query asks
    /// each of them).
    pub fn trackers(&self) -> &[Addr<Tracker>] {
        &self.trackers
    }
}

impl Handler<Near> for Tracker {
    type Result = MessageResult<Near>;

    fn handle(&mut self, msg: Near, _: &mut Self::Context) -> Self::Result {
        let q = msg.0;
        let mut found: Vec<(&Position, f64)> = self
            .latest
            .values()
            .filter_map(|e| {
                let p = &e.position;
                let d = crate::store::distance_m(q.lat, q.lon, p.lat.get(), p.lon.get());
                (d <= q.radius_m).then_some((p, d))
            })
            .collect();
        found.sort_by(|a, b| a.1.total_cmp(&b.1));
        found.truncate(q.limit);
        MessageResult(
            found
                .into_iter()
                .map(|(p, d)| (crate::store::StoredPosition::from(p), d))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_model::position::{TimeRules, UncheckedPosition};

    fn position(courier: &str, seconds_ago: i64) -> Position {
        let now = Utc::now();
        let unchecked = UncheckedPosition {
            courier_id: Some(courier),
            lat: Some(1.0),
            lon: Some(2.0),
            recorded_at: Some(now - chrono::TimeDelta::seconds(seconds_ago)),
            ..UncheckedPosition::default()
        };
        Position::try_new(&unchecked, now, &TimeRules::default()).expect("valid position")
    }

    async fn held(tracker: &Addr<Tracker>, courier: &str) -> Option<Position> {
        tracker
            .send(Latest(courier.to_owned()))
            .await
            .expect("tracker answers")
    }

    #[actix_rt::test]
    async fn a_full_tracker_evicts_the_courier_silent_longest() {
        let metrics = Metrics::new();
        let tracker = Tracker::new(Duration::from_secs(3600), 3, metrics.clone()).start();
        for c in ["c1", "c2", "c3", "c4", "c5"] {
            tracker.do_send(Observe(vec![position(c, 10)]));
        }
        // c3 sends an older fix: it is news from c3 (not evicted next), but
        // the newer fix stays its latest position.
        tracker.do_send(Observe(vec![position("c3", 100)]));
        tracker.do_send(Observe(vec![position("c6", 10)]));
        for gone in ["c1", "c2", "c4"] {
            assert!(held(&tracker, gone).await.is_none(), "{gone} still held");
        }
        for kept in ["c3", "c5", "c6"] {
            assert!(held(&tracker, kept).await.is_some(), "{kept} forgotten");
        }
        let c3 = held(&tracker, "c3").await.expect("c3");
        assert!(Utc::now() - c3.recorded_at < chrono::TimeDelta::seconds(60));
        assert_eq!(metrics.tracker_evictions.get(), 3);
        assert_eq!(metrics.tracked_couriers.get(), 3);
    }

    #[test]
    fn the_recency_log_stays_bounded_under_repeated_updates() {
        let metrics = Metrics::new();
        let mut tracker = Tracker::new(Duration::from_secs(3600), 10, metrics.clone());
        for i in 0..10_000 {
            tracker.observe(position(&format!("c{}", i % 4), 10));
        }
        assert_eq!(tracker.latest.len(), 4);
        assert!(
            tracker.recency.len() <= 2 * 4 + 64 + 1,
            "{}",
            tracker.recency.len()
        );
        assert_eq!(metrics.tracker_evictions.get(), 0);
    }
}
