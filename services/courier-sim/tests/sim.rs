//! The simulator against a real ingest-api on the local stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use courier_model::avro::decode_record;
use courier_sim::sim::{Counters, SimConfig, Summary, run};
use courier_stream::local::LocalStreamReader;
use ingest_api::app::Application;
use ingest_api::auth::create_key;
use ingest_api::config::Settings;

struct Api {
    url: String,
    token: String,
    dir: tempfile::TempDir,
}

async fn start_api(rps: Option<f64>) -> Api {
    let dir = tempfile::tempdir().expect("tmp");
    let (token, line) = create_key("sim", rps).expect("key");
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_workers: 2,
        data_dir: dir.path().to_path_buf(),
        linger_ms: 5,
        refresh_secs: 1,
        api_keys: Some(line),
        ..Settings::default()
    };
    let app = Application::build(settings).await.expect("app");
    let url = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.run_until_stopped());
    Api { url, token, dir }
}

fn stream_ids(dir: &std::path::Path) -> (usize, HashSet<String>) {
    let reader = LocalStreamReader::open(dir, "courier-positions").expect("stream");
    let mut total = 0;
    let mut ids = HashSet::new();
    for shard in reader.map().shards() {
        let mut cursor = reader.cursor(&shard.shard_id, None).expect("cursor");
        loop {
            let batch = cursor.next_batch(1000).expect("read");
            if batch.is_empty() {
                break;
            }
            for r in batch {
                for p in decode_record(&r.data).expect("container") {
                    total += 1;
                    ids.insert(p.expect("datum").event_id);
                }
            }
        }
    }
    (total, ids)
}

async fn simulate(api: &Api, config: SimConfig) -> Summary {
    run(
        SimConfig {
            url: api.url.clone(),
            token: api.token.clone(),
            record_accepted_ids: true,
            record_latency: true,
            ..config
        },
        Arc::new(Counters::default()),
    )
    .await
    .expect("simulation runs")
}

#[actix_rt::test]
async fn every_sample_the_api_accepted_is_in_the_stream_and_rejections_are_counted_by_field() {
    let api = start_api(None).await;
    let summary = simulate(
        &api,
        SimConfig {
            couriers: 20,
            interval: Duration::from_millis(5),
            duration: None,
            samples_per_courier: Some(20),
            batch_size: 4,
            duplicate_rate: 0.3,
            out_of_order_rate: 0.2,
            invalid_rate: 0.3,
            seed: 7,
            ..SimConfig::default()
        },
    )
    .await;
    assert_eq!(summary.failed_requests, 0);
    assert!(
        summary.duplicates_sent > 0 && summary.out_of_order_sent > 0 && summary.invalid_sent > 0
    );
    let rejected: u64 = summary.rejected_by_field.values().sum();
    assert_eq!(
        rejected, summary.invalid_sent,
        "{:?}",
        summary.rejected_by_field
    );
    assert_eq!(summary.accepted + rejected, summary.samples_sent);
    // Every sample a courier produced is sent once, plus the deliberate duplicates.
    assert_eq!(
        summary.samples_sent,
        20 * 20 + summary.duplicates_sent + summary.invalid_sent
    );

    let (total, ids) = stream_ids(api.dir.path());
    assert_eq!(total as u64, summary.accepted);
    assert_eq!(Some(ids), summary.accepted_ids);
}

#[actix_rt::test]
async fn the_same_seed_sends_the_same_event_ids() {
    let api = start_api(None).await;
    let config = SimConfig {
        couriers: 5,
        interval: Duration::ZERO,
        duration: None,
        samples_per_courier: Some(6),
        batch_size: 3,
        duplicate_rate: 0.0,
        out_of_order_rate: 0.0,
        invalid_rate: 0.0,
        seed: 99,
        ..SimConfig::default()
    };
    let a = simulate(&api, config.clone()).await;
    let b = simulate(&api, config.clone()).await;
    assert_eq!(a.accepted_ids, b.accepted_ids);
    let c = simulate(
        &api,
        SimConfig {
            seed: 100,
            ..config
        },
    )
    .await;
    assert_ne!(a.accepted_ids, c.accepted_ids);
}

#[actix_rt::test]
async fn on_429_the_fleet_backs_off_and_retries_with_the_same_event_ids_until_accepted() {
    let api = start_api(Some(20.0)).await;
    let summary = simulate(
        &api,
        SimConfig {
            couriers: 10,
            interval: Duration::ZERO,
            duration: None,
            samples_per_courier: Some(8),
            batch_size: 2,
            duplicate_rate: 0.0,
            out_of_order_rate: 0.0,
            invalid_rate: 0.0,
            seed: 3,
            ..SimConfig::default()
        },
    )
    .await;
    assert!(summary.throttled > 0, "the key's limit was never hit");
    assert!(summary.retries >= summary.throttled);
    assert_eq!(summary.failed_requests, 0);
    assert_eq!(summary.accepted, 80);
    // Retries reuse event ids: the stream holds each position exactly once.
    let (total, ids) = stream_ids(api.dir.path());
    assert_eq!((total, ids.len()), (80, 80));
}
