//! The Kinesis sink against a real Kinesis API server (`moto_server`), with
//! a fault-injecting proxy for throttling and outages.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_model::avro::decode_record;
use courier_stream::kinesis::KinesisStream;
use courier_stream::{ShardMap, StreamSink};
use ingest_api::app::Application;
use ingest_api::auth::{ApiKeys, create_key};
use serde_json::{Value, json};
use support::*;
use test_support::fault_proxy::FaultProxy;
use test_support::moto::{MotoServer, create_stream, kinesis_client, read_all_records};

struct KinesisApp {
    app: TestApp,
    moto: MotoServer,
    stream: String,
}

/// moto with a fresh stream of `shards` shards.
async fn moto_with_stream(shards: i32) -> (MotoServer, String) {
    let moto = MotoServer::start().await;
    let stream = format!("positions-{}", uuid::Uuid::new_v4().simple());
    create_stream(&kinesis_client(&moto.endpoint), &stream, shards).await;
    (moto, stream)
}

/// Posts `n` batches of 10 positions for many couriers; returns the acked event ids.
async fn post_batches(app: &TestApp, n: usize) -> (HashSet<String>, Vec<u16>) {
    let mut acked = HashSet::new();
    let mut statuses = Vec::new();
    for b in 0..n {
        let items: Vec<Value> = (0..10)
            .map(|i| position(&format!("courier-{}", (b * 10 + i) % 37), &new_event_id()))
            .collect();
        let ids: Vec<String> = items
            .iter()
            .map(|p| p["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let (status, json) = app.post_json(&json!({ "positions": items })).await;
        if status == 202 {
            assert_eq!(json["accepted"], 10);
            acked.extend(ids);
        }
        statuses.push(status);
    }
    (acked, statuses)
}

fn decode_all(records: &[(String, Vec<u8>)], shards: &ShardMap) -> Vec<String> {
    let mut ids = Vec::new();
    for (shard_id, data) in records {
        for datum in decode_record(data).expect("every record is an Avro container") {
            let p = datum.expect("datum");
            let owner = &shards.shards()[shards.index_for_key(&p.courier_id)].shard_id;
            assert_eq!(
                owner, shard_id,
                "courier {} on the wrong shard",
                p.courier_id
            );
            ids.push(p.event_id);
        }
    }
    ids
}

async fn shard_map(endpoint: &str, stream: &str) -> ShardMap {
    KinesisStream::new(kinesis_client(endpoint), stream)
        .shard_map()
        .await
        .expect("shard map")
}

#[actix_rt::test]
async fn every_acked_position_is_read_back_from_kinesis_on_its_couriers_shard() {
    let (moto, stream) = moto_with_stream(3).await;
    let k = KinesisApp {
        app: app_through(&moto.endpoint, &stream, |_| {}).await,
        moto,
        stream,
    };
    let (acked, statuses) = post_batches(&k.app, 30).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let records = read_all_records(&kinesis_client(&k.moto.endpoint), &k.stream).await;
    // Aggregation: far fewer records than positions.
    assert!(
        records.len() < acked.len() / 2,
        "{} records for {} positions",
        records.len(),
        acked.len()
    );
    let ids = decode_all(&records, &shard_map(&k.moto.endpoint, &k.stream).await);
    assert_eq!(ids.len(), acked.len(), "no duplicates without faults");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), acked);
}

#[actix_rt::test]
async fn throttled_entries_are_retried_until_every_acked_position_is_in_the_stream() {
    let (moto, stream) = moto_with_stream(2).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.throttle_every(3);
    let app = app_through(&proxy.endpoint, &stream, |s| s.linger_ms = 1).await;

    let (acked, statuses) = post_batches(&app, 40).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert!(proxy.throttled() > 0, "the proxy throttled nothing");
    assert!(app.metric("ingest_sink_records_throttled_total").await >= proxy.throttled() as f64);
    assert!(app.metric("ingest_sink_records_retried_total").await > 0.0);
    assert!(
        app.metric("ingest_sink_put_calls_total{result=\"partial\"}")
            .await
            > 0.0
    );

    let records = read_all_records(&kinesis_client(&moto.endpoint), &stream).await;
    let ids = decode_all(&records, &shard_map(&moto.endpoint, &stream).await);
    assert_eq!(
        ids.len(),
        acked.len(),
        "a throttled entry is not written, so no duplicates"
    );
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), acked);
}

async fn app_through(
    endpoint: &str,
    stream: &str,
    tweak: impl FnOnce(&mut ingest_api::Settings),
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("tmp");
    let (token, line) = create_key("kinesis-test", None).expect("key");
    let mut settings = test_settings(data_dir.path());
    settings.sink = ingest_api::config::SinkKind::Kinesis;
    settings.stream_name = stream.to_owned();
    settings.api_keys = Some(line.clone());
    tweak(&mut settings);
    let sink: Arc<dyn StreamSink> = Arc::new(KinesisStream::new(kinesis_client(endpoint), stream));
    let app =
        Application::build_with_sink(settings.clone(), ApiKeys::parse(&line).expect("keys"), sink)
            .await
            .expect("app");
    support::adopt(app, settings, token, data_dir).await
}

#[actix_rt::test]
async fn during_an_outage_clients_get_503_and_readyz_is_503_then_the_service_recovers_by_itself() {
    let (moto, stream) = moto_with_stream(2).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let app = app_through(&proxy.endpoint, &stream, |s| {
        s.write_timeout_ms = 1500;
        s.retry_max_ms = 200;
    })
    .await;
    let (mut acked, statuses) = post_batches(&app, 5).await;
    assert!(statuses.iter().all(|s| *s == 202));

    proxy.cut();
    let (during, statuses) = post_batches(&app, 2).await;
    assert!(
        during.is_empty(),
        "nothing may be acked while the stream is cut off"
    );
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let readyz = format!("{}/readyz", app.base);
    wait_for(
        "readyz to report the outage",
        Duration::from_secs(15),
        || async { matches!(app.client.get(&readyz).send().await, Ok(r) if r.status() == 503) },
    )
    .await;
    let ready: Value = app
        .client
        .get(&readyz)
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["checks"]["stream_reachable"], false, "{ready}");

    proxy.restore();
    app.wait_ready(Duration::from_secs(15)).await;
    let (after, statuses) = post_batches(&app, 5).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    acked.extend(after);

    let records = read_all_records(&kinesis_client(&moto.endpoint), &stream).await;
    let stored: HashSet<String> = decode_all(&records, &shard_map(&moto.endpoint, &stream).await)
        .into_iter()
        .collect();
    assert!(
        acked.is_subset(&stored),
        "an acked position is missing from the stream"
    );
    assert!(app.metric("ingest_sink_records_failed_total").await >= 1.0);
}

/// The binary takes its Kinesis endpoint from the standard AWS configuration
/// chain, as on ECS: here `AWS_ENDPOINT_URL` points it at moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_finds_kinesis_through_the_aws_configuration_chain() {
    let (moto, stream) = moto_with_stream(2).await;
    let (token, line) = create_key("env-chain", None).expect("key");
    let server = support::binary::RunningBinary::start(
        &["--sink", "kinesis", "--stream-name", &stream],
        &[
            ("INGEST_API_KEYS", &line),
            ("AWS_ENDPOINT_URL", &moto.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    server.wait_ready().await;
    let ids: Vec<String> = (0..20).map(|_| new_event_id()).collect();
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| position(&format!("c{i}"), id))
        .collect();
    let res = reqwest::Client::new()
        .post(format!("{}/v1/positions", server.base))
        .bearer_auth(&token)
        .json(&json!({ "positions": items }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 202);
    let records = read_all_records(&kinesis_client(&moto.endpoint), &stream).await;
    let stored: HashSet<String> = decode_all(&records, &shard_map(&moto.endpoint, &stream).await)
        .into_iter()
        .collect();
    assert_eq!(stored, ids.into_iter().collect::<HashSet<_>>());
}

/// After a reshard (2 → 4 shards with `UpdateShardCount`), the service
/// reloads its shard map within one `refresh_secs` period (5 s here; the old
/// periodic reload came every 60 s), and then addresses records to every
/// child shard, so one child does not take all of its parent's traffic.
/// (moto 5.2 itself stores a record on the first shard, open or closed, whose
/// range holds its hash key, so where moto puts them cannot be checked: the
/// test checks where the service addresses them.)
#[actix_rt::test]
async fn after_a_reshard_the_shard_map_is_reloaded_within_a_refresh_period_and_every_child_is_addressed()
 {
    let (moto, stream) = moto_with_stream(2).await;
    let app = app_through(&moto.endpoint, &stream, |s| s.refresh_secs = 5).await;
    let (mut acked, statuses) = post_batches(&app, 3).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(app.metric("ingest_stream_shards").await, 2.0);

    let client = kinesis_client(&moto.endpoint);
    client
        .update_shard_count()
        .stream_name(&stream)
        .target_shard_count(4)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .expect("UpdateShardCount");
    let map = shard_map(&moto.endpoint, &stream).await;
    assert_eq!(map.len(), 4, "moto resharded");

    let resharded = Instant::now();
    wait_for(
        "the service to reload its shard map",
        Duration::from_secs(15),
        || async { app.metric("ingest_stream_shards").await == 4.0 },
    )
    .await;
    assert!(resharded.elapsed() < Duration::from_secs(15));

    let routed_before: Vec<f64> = {
        let mut v = Vec::new();
        for shard in map.shards() {
            v.push(
                app.metric(&format!(
                    "ingest_records_routed_total{{shard=\"{}\"}}",
                    shard.shard_id
                ))
                .await,
            );
        }
        v
    };
    let (after, statuses) = post_batches(&app, 10).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    acked.extend(after);
    for (shard, before) in map.shards().iter().zip(routed_before) {
        let now = app
            .metric(&format!(
                "ingest_records_routed_total{{shard=\"{}\"}}",
                shard.shard_id
            ))
            .await;
        assert!(
            now > before,
            "no record addressed to child shard {} after the reload",
            shard.shard_id
        );
    }

    let records = read_all_records(&client, &stream).await;
    let mut stored = HashSet::new();
    for (_, data) in &records {
        for datum in decode_record(data).expect("every record is an Avro container") {
            stored.insert(datum.expect("datum").event_id);
        }
    }
    assert!(acked.is_subset(&stored), "an acked position is missing");
}
