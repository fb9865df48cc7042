//! The latest-position tracker: actor state sharded by courier. Each shard
//! keeps, per courier, the accepted position with the greatest `recorded_at`
//! (device time, not arrival order), and forgets couriers silent for longer
//! than the TTL.

use std::collections::HashMap;
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

/// One tracker shard.
pub struct Tracker {
    latest: HashMap<String, Position>,
    ttl: Duration,
    metrics: Metrics,
}

impl Tracker {
    /// An empty shard.
    pub fn new(ttl: Duration, metrics: Metrics) -> Self {
        Self {
            latest: HashMap::new(),
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
        self.latest.retain(|_, p| p.received_at >= cutoff);
        self.metrics
            .tracked_couriers
            .sub((before - self.latest.len()) as i64);
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
            match self.latest.get_mut(position.courier_id.as_str()) {
                Some(current) => {
                    if position.recorded_at > current.recorded_at {
                        *current = position;
                    }
                }
                None => {
                    self.metrics.tracked_couriers.inc();
                    self.latest
                        .insert(position.courier_id.as_str().to_owned(), position);
                }
            }
        }
    }
}

impl Handler<Latest> for Tracker {
    type Result = Option<Position>;

    fn handle(&mut self, msg: Latest, _: &mut Self::Context) -> Self::Result {
        self.latest.get(&msg.0).cloned()
    }
}
