//! Prometheus metrics. Each one is described in `docs/operations.md`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric of the service, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route.
    pub http_duration: HistogramVec,
    /// Positions accepted (durable in the stream).
    pub positions_accepted: IntCounter,
    /// Positions rejected by validation, by first failing field.
    pub positions_rejected: IntCounterVec,
    /// Requests refused before any work, by reason.
    pub refused: IntCounterVec,
    /// Stream records built by the batchers.
    pub records_built: IntCounter,
    /// Positions per stream record.
    pub record_positions: Histogram,
    /// Bytes per stream record (after compression).
    pub record_bytes: Histogram,
    /// PutRecords calls by result (`ok`, `partial`, `error`).
    pub put_calls: IntCounterVec,
    /// PutRecords latency.
    pub put_duration: Histogram,
    /// Records written.
    pub records_written: IntCounter,
    /// Bytes written.
    pub bytes_written: IntCounter,
    /// Record entries that failed and were retried.
    pub records_retried: IntCounter,
    /// Record entries refused for throughput (ProvisionedThroughputExceeded).
    pub records_throttled: IntCounter,
    /// Records given up at their deadline (their requests got 503).
    pub records_failed: IntCounter,
    /// Writer actor restarts.
    pub writer_restarts: IntCounter,
    /// Positions accepted but not yet durable.
    pub inflight_positions: IntGauge,
    /// Bytes accepted but not yet durable.
    pub inflight_bytes: IntGauge,
    /// 1 when the stream answered the last health check.
    pub stream_up: IntGauge,
    /// Unread local stream segments deleted over the disk cap (data loss).
    pub local_segments_dropped: IntGauge,
    /// Open shards in the routing table.
    pub shards: IntGauge,
    /// Couriers in the latest-position tracker.
    pub tracked_couriers: IntGauge,
    /// Couriers forgotten because their tracker shard was full.
    pub tracker_evictions: IntCounter,
    /// Writer actors found dead (a panic) and started again.
    pub writer_panics: IntCounter,
    /// Records built, by the shard the routing table addressed them to.
    pub records_routed: IntCounterVec,
    /// Shard-map reloads asked for by misrouted records.
    pub shard_map_reloads: IntCounter,
    /// Records handed to the writers by the batchers and not yet returned
    /// (group commit: at most one flush per shard in flight).
    pub batcher_inflight_records: IntGauge,
    /// How long a batcher held a flush to stay within the shard's rate
    /// (Kinesis pacing).
    pub pacing_delay: Histogram,
    /// Records the stream put on another shard than the routing table chose
    /// (the shard map is stale: a reshard happened).
    pub misrouted_records: IntCounter,
    /// Viewers connected to `GET /v1/positions/stream`.
    pub stream_viewers: IntGauge,
    /// Live events skipped for viewers that lagged behind.
    pub stream_events_dropped: IntCounter,
    /// 1 when the last call to the shared position store succeeded.
    pub store_up: IntGauge,
    /// Couriers whose latest position the shared store replaced.
    pub store_updates: IntCounter,
    /// Positions the shared store kept out because it held a newer one.
    pub store_updates_stale: IntCounter,
    /// Position updates the shared store never got, by reason.
    pub store_updates_dropped: IntCounterVec,
    /// Failed calls to the shared store, by operation.
    pub store_errors: IntCounterVec,
    /// Positions queued for the shared store.
    pub store_queued_positions: IntGauge,
    /// Customer tracking links created.
    pub tracking_links_created: IntCounter,
    /// Customer tracking links revoked before they expired.
    pub tracking_links_revoked: IntCounter,
    /// Tracking link reads answered with the courier's position (or that
    /// none is known yet).
    pub tracking_links_served: IntCounter,
    /// Tracking link reads answered 404: unknown, tampered, expired or
    /// revoked token.
    pub tracking_links_not_found: IntCounter,
    /// Erasures of a courier from the position store (DELETE
    /// /v1/couriers/{courier_id}/position).
    pub couriers_erased: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(h.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    h
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// A fresh registry with every metric (names are static: cannot fail).
    pub fn new() -> Self {
        let r = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "ingest_http_request_duration_seconds",
                "HTTP request latency, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        r.register(Box::new(http_duration.clone()))
            .unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            http_requests: counter_vec(
                &r,
                "ingest_http_requests_total",
                "HTTP requests, by route and status code.",
                &["route", "status"],
            ),
            http_duration,
            positions_accepted: counter(
                &r,
                "ingest_positions_accepted_total",
                "Positions acknowledged with 202 (durable in the stream).",
            ),
            positions_rejected: counter_vec(
                &r,
                "ingest_positions_rejected_total",
                "Positions rejected by validation, by the first failing field.",
                &["field"],
            ),
            refused: counter_vec(
                &r,
                "ingest_requests_refused_total",
                "Requests refused before their positions reached the stream, by reason.",
                &["reason"],
            ),
            records_built: counter(
                &r,
                "ingest_records_built_total",
                "Stream records (Avro container files) built by the batchers.",
            ),
            record_positions: histogram(
                &r,
                "ingest_record_positions",
                "Positions per stream record.",
                vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                ],
            ),
            record_bytes: histogram(
                &r,
                "ingest_record_bytes",
                "Bytes per stream record, after compression.",
                vec![
                    256.0, 1024.0, 4096.0, 16384.0, 25600.0, 65536.0, 262144.0, 524288.0, 1048576.0,
                ],
            ),
            put_calls: counter_vec(
                &r,
                "ingest_sink_put_calls_total",
                "PutRecords calls, by result: ok, partial (some entries failed), error (the call failed).",
                &["result"],
            ),
            put_duration: histogram(
                &r,
                "ingest_sink_put_duration_seconds",
                "PutRecords call latency (local stream: append and fsync).",
                LATENCY_BUCKETS.to_vec(),
            ),
            records_written: counter(
                &r,
                "ingest_sink_records_written_total",
                "Stream records written.",
            ),
            bytes_written: counter(
                &r,
                "ingest_sink_bytes_written_total",
                "Stream record bytes written.",
            ),
            records_retried: counter(
                &r,
                "ingest_sink_records_retried_total",
                "Stream record puts retried after a failed entry or call.",
            ),
            records_throttled: counter(
                &r,
                "ingest_sink_records_throttled_total",
                "Stream record entries refused with ProvisionedThroughputExceededException.",
            ),
            records_failed: counter(
                &r,
                "ingest_sink_records_failed_total",
                "Stream records given up at their deadline; their requests were answered 503.",
            ),
            writer_restarts: counter(
                &r,
                "ingest_writer_restarts_total",
                "Writer actor restarts by the supervisor after a sink failure.",
            ),
            inflight_positions: gauge(
                &r,
                "ingest_inflight_positions",
                "Positions accepted for writing and not yet durable.",
            ),
            inflight_bytes: gauge(
                &r,
                "ingest_inflight_bytes",
                "Encoded bytes accepted for writing and not yet durable.",
            ),
            stream_up: gauge(
                &r,
                "ingest_stream_up",
                "1 when the stream passed its last health check, else 0.",
            ),
            local_segments_dropped: gauge(
                &r,
                "ingest_local_stream_unread_segments_deleted",
                "Local stream segments deleted over the disk cap before the compactor read them, since start (data loss: alert on any).",
            ),
            shards: gauge(
                &r,
                "ingest_stream_shards",
                "Open shards in the routing table.",
            ),
            tracked_couriers: gauge(
                &r,
                "ingest_tracked_couriers",
                "Couriers whose latest position is held by the tracker.",
            ),
            tracker_evictions: counter(
                &r,
                "ingest_tracker_evictions_total",
                "Couriers forgotten by the latest-position tracker because it held tracker_max_couriers (the one silent longest goes).",
            ),
            writer_panics: counter(
                &r,
                "ingest_writer_panics_total",
                "Writer actors that died of a panic and were started again; the requests waiting on them were answered 503.",
            ),
            records_routed: counter_vec(
                &r,
                "ingest_records_routed_total",
                "Stream records built, by the shard the routing table addressed them to (explicit hash key).",
                &["shard"],
            ),
            shard_map_reloads: counter(
                &r,
                "ingest_shard_map_stale_reloads_total",
                "Shard-map reloads asked for at once because records landed on another shard than routed.",
            ),
            batcher_inflight_records: gauge(
                &r,
                "ingest_batcher_inflight_records",
                "Stream records handed to the writers and not yet written or given up (group commit: one flush per shard in flight).",
            ),
            pacing_delay: histogram(
                &r,
                "ingest_batcher_pacing_delay_seconds",
                "Time a batcher held a flush to keep its shard under kinesis_shard_bytes_per_sec / kinesis_shard_records_per_sec.",
                LATENCY_BUCKETS.to_vec(),
            ),
            misrouted_records: counter(
                &r,
                "ingest_stream_misrouted_records_total",
                "Records the stream put on another shard than the routing table chose (a reshard); each one triggers a shard-map refresh.",
            ),
            stream_viewers: gauge(
                &r,
                "ingest_stream_viewers",
                "Viewers connected to the live position stream (GET /v1/positions/stream).",
            ),
            stream_events_dropped: counter(
                &r,
                "ingest_stream_events_dropped_total",
                "Live stream events skipped for viewers that fell more than stream_buffer events behind.",
            ),
            store_up: gauge(
                &r,
                "ingest_store_up",
                "1 when the last call to the shared position store (Redis) succeeded, else 0.",
            ),
            store_updates: counter(
                &r,
                "ingest_store_updates_total",
                "Latest positions replaced in the shared position store.",
            ),
            store_updates_stale: counter(
                &r,
                "ingest_store_updates_stale_total",
                "Positions the shared store did not take because it held one with a later recorded_at.",
            ),
            store_updates_dropped: counter_vec(
                &r,
                "ingest_store_updates_dropped_total",
                "Positions (durable in the stream) that never reached the shared store, by reason: queue_full, store_error.",
                &["reason"],
            ),
            store_errors: counter_vec(
                &r,
                "ingest_store_errors_total",
                "Failed calls to the shared position store, by operation.",
                &["op"],
            ),
            store_queued_positions: gauge(
                &r,
                "ingest_store_queued_positions",
                "Positions waiting for the shared position store.",
            ),
            tracking_links_created: counter(
                &r,
                "ingest_tracking_links_created_total",
                "Customer tracking links created.",
            ),
            tracking_links_revoked: counter(
                &r,
                "ingest_tracking_links_revoked_total",
                "Customer tracking links revoked before they expired.",
            ),
            tracking_links_served: counter(
                &r,
                "ingest_tracking_links_served_total",
                "Tracking link reads answered with the courier's latest position.",
            ),
            tracking_links_not_found: counter(
                &r,
                "ingest_tracking_links_not_found_total",
                "Tracking link reads answered 404 (unknown, tampered, expired or revoked).",
            ),
            couriers_erased: counter(
                &r,
                "ingest_couriers_erased_total",
                "Erasures of a courier from the position store (DELETE /v1/couriers/{courier_id}/position).",
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
