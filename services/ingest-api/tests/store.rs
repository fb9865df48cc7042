//! The shared position store (Redis) against the machine's real Redis server
//! at 127.0.0.1:6379 (`make test` starts one when it is not running). Each
//! test owns its keys (a key prefix of its own); the outage test runs a
//! redis-server of its own on a free port and stops it.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeDelta, Utc};
use ingest_api::auth::create_key;
use serde_json::{Value, json};
use support::binary::RunningBinary;
use support::*;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

fn prefix() -> String {
    format!("test-{}:", uuid::Uuid::new_v4())
}

/// An app on the shared store under `prefix`.
async fn app_on(url: &str, prefix: &str) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    spawn_app_with(move |s| {
        s.redis_url = Some(url);
        s.redis_key_prefix = prefix;
        s.redis_timeout_ms = 300;
        s.tracker_ttl_secs = 600;
    })
    .await
}

fn at(courier: &str, lat: f64, lon: f64, seconds_ago: i64) -> Value {
    json!({
        "event_id": new_event_id(),
        "courier_id": courier,
        "lat": lat,
        "lon": lon,
        "recorded_at": (Utc::now() - TimeDelta::seconds(seconds_ago))
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        "speed_mps": 4.0,
    })
}

async fn get(client: &reqwest::Client, base: &str, token: &str, path: &str) -> (u16, Value) {
    let res = client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits until `path` answers 200 with `field` equal to `want`.
async fn wait_field(app_base: &str, token: &str, path: &str, field: &str, want: &Value) {
    let client = reqwest::Client::new();
    wait_for(
        &format!("{path} {field} = {want}"),
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move {
                let (status, body) = get(&client, app_base, token, path).await;
                status == 200 && &body[field] == want
            }
        },
    )
    .await;
}

#[actix_rt::test]
async fn two_processes_sharing_one_store_answer_the_same_latest_position() {
    let prefix = prefix();
    let (token, line) = create_key("two-processes", None).expect("key");
    let dirs = [
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    ];
    let start = |dir: &tempfile::TempDir| {
        RunningBinary::start(
            &["--data-dir", dir.path().to_str().expect("utf-8 path")],
            &[
                ("INGEST_API_KEYS", line.as_str()),
                ("INGEST_REDIS_URL", SHARED_REDIS),
                ("INGEST_REDIS_KEY_PREFIX", prefix.as_str()),
                ("INGEST_LINGER_MS", "5"),
            ],
        )
    };
    let (a, b) = (start(&dirs[0]), start(&dirs[1]));
    a.wait_ready().await;
    b.wait_ready().await;
    let client = reqwest::Client::new();
    let post = |base: &str, body: Value| {
        client
            .post(format!("{base}/v1/positions"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let first = at("shared-1", -23.55, -46.63, 30);
    assert_eq!(
        post(&a.base, first.clone()).await.expect("post").status(),
        202
    );
    for base in [&a.base, &b.base] {
        wait_field(
            base,
            &token,
            "/v1/couriers/shared-1/position",
            "event_id",
            &first["event_id"],
        )
        .await;
    }
    // A newer fix through the other process replaces it for both.
    let second = at("shared-1", -23.56, -46.64, 5);
    assert_eq!(
        post(&b.base, second.clone()).await.expect("post").status(),
        202
    );
    for base in [&a.base, &b.base] {
        wait_field(
            base,
            &token,
            "/v1/couriers/shared-1/position",
            "event_id",
            &second["event_id"],
        )
        .await;
        let (_, body) = get(&client, base, &token, "/v1/couriers/shared-1/position").await;
        assert_eq!(body["lat"], -23.56);
    }
    // A courier neither process has heard of is unknown to both.
    for base in [&a.base, &b.base] {
        let (status, _) = get(&client, base, &token, "/v1/couriers/nobody/position").await;
        assert_eq!(status, 404);
    }
}

#[actix_rt::test]
async fn out_of_order_arrivals_never_move_a_courier_back() {
    let prefix = prefix();
    let app = app_on(SHARED_REDIS, &prefix).await;
    let newest = at("ooo-1", 10.0, 10.0, 10);
    assert_eq!(app.post_json(&newest).await.0, 202);
    wait_field(
        &app.base,
        &app.token,
        "/v1/couriers/ooo-1/position",
        "event_id",
        &newest["event_id"],
    )
    .await;
    // Older fixes arrive later, alone and in a batch with a duplicate.
    let older = at("ooo-1", 11.0, 11.0, 60);
    assert_eq!(app.post_json(&older).await.0, 202);
    let batch = json!({"positions": [at("ooo-1", 12.0, 12.0, 120), at("ooo-1", 13.0, 13.0, 20)]});
    assert_eq!(app.post_json(&batch).await.0, 202);
    wait_for("three stale updates", Duration::from_secs(10), || async {
        app.metric("ingest_store_updates_stale_total").await >= 3.0
    })
    .await;
    let (status, body) = get(
        &app.client,
        &app.base,
        &app.token,
        "/v1/couriers/ooo-1/position",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["event_id"], newest["event_id"]);
    assert_eq!(body["lat"], 10.0);
    // The geo index did not move either.
    let (_, near) = get(
        &app.client,
        &app.base,
        &app.token,
        "/v1/couriers/near?lat=10&lon=10&radius_m=10",
    )
    .await;
    assert_eq!(near["couriers"][0]["courier_id"], "ooo-1", "{near}");
}

/// Couriers due north of (0, 0) at the given distances (metres, along the
/// meridian: 1 degree of latitude is R * pi / 180 m).
fn north_of_origin(distance_m: f64) -> f64 {
    distance_m / (ingest_api::store::EARTH_RADIUS_M * std::f64::consts::PI / 180.0)
}

async fn nearby_returns_exactly_the_couriers_inside_the_radius(app: &TestApp, tag: &str) {
    let placed = [
        ("a", 100.0),
        ("b", 990.0),
        ("c", 1010.0),
        ("d", 5000.0),
        ("e", 0.0),
    ];
    let positions: Vec<Value> = placed
        .iter()
        .map(|(c, d)| at(&format!("{tag}-{c}"), north_of_origin(*d), 0.0, 3))
        .collect();
    assert_eq!(app.post_json(&json!({"positions": positions})).await.0, 202);
    let last = format!("/v1/couriers/{tag}-e/position");
    wait_field(
        &app.base,
        &app.token,
        &last,
        "courier_id",
        &json!(format!("{tag}-e")),
    )
    .await;
    let client = reqwest::Client::new();
    wait_for("all five in the geo index", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let (_, b) = get(
                &client,
                &app.base,
                &app.token,
                "/v1/couriers/near?lat=0&lon=0&radius_m=6000",
            )
            .await;
            b["couriers"].as_array().is_some_and(|c| c.len() == 5)
        }
    })
    .await;
    let (status, body) = get(
        &app.client,
        &app.base,
        &app.token,
        "/v1/couriers/near?lat=0&lon=0&radius_m=1000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<&str> = body["couriers"]
        .as_array()
        .expect("couriers")
        .iter()
        .map(|c| c["courier_id"].as_str().expect("id"))
        .collect();
    let want: Vec<String> = ["e", "a", "b"]
        .iter()
        .map(|c| format!("{tag}-{c}"))
        .collect();
    assert_eq!(found, want, "{body}");
    let b = &body["couriers"][2];
    assert!(
        (b["distance_m"].as_f64().expect("distance") - 990.0).abs() < 1.0,
        "{b}"
    );
    let age = b["age_secs"].as_f64().expect("age");
    assert!((2.0..60.0).contains(&age), "{b}");
    // limit keeps the nearest.
    let (_, two) = get(
        &app.client,
        &app.base,
        &app.token,
        "/v1/couriers/near?lat=0&lon=0&radius_m=6000&limit=2",
    )
    .await;
    let ids: Vec<&str> = two["couriers"]
        .as_array()
        .expect("couriers")
        .iter()
        .filter_map(|c| c["courier_id"].as_str())
        .collect();
    assert_eq!(ids, [format!("{tag}-e"), format!("{tag}-a")]);
    // Bounds: 400 naming the parameter.
    for (query, field) in [
        ("lat=0&lon=0", "radius_m"),
        ("lat=0&lon=0&radius_m=50001", "radius_m"),
        ("lat=91&lon=0&radius_m=1", "lat"),
        ("lat=0&lon=0&radius_m=1&limit=501", "limit"),
        ("lat=0&lon=x&radius_m=1", "lon"),
    ] {
        let (status, err) = get(
            &app.client,
            &app.base,
            &app.token,
            &format!("/v1/couriers/near?{query}"),
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(err["field"], field, "{query}: {err}");
        assert_eq!(err["error"], "invalid_parameter");
    }
}

#[actix_rt::test]
async fn nearby_on_the_shared_store() {
    let app = app_on(SHARED_REDIS, &prefix()).await;
    nearby_returns_exactly_the_couriers_inside_the_radius(&app, "geo").await;
}

#[actix_rt::test]
async fn nearby_on_the_embedded_store() {
    let app = spawn_app().await;
    nearby_returns_exactly_the_couriers_inside_the_radius(&app, "local").await;
}

#[actix_rt::test]
async fn one_live_stream_shows_positions_posted_to_either_process() {
    let prefix = prefix();
    let a = app_on(SHARED_REDIS, &prefix).await;
    let b = app_on(SHARED_REDIS, &prefix).await;
    let mut res = a
        .client
        .get(format!("{}/v1/positions/stream", a.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    // Post to both until the stream has shown a position from each (the
    // subscription may start just after the first posts).
    let mut round = 0;
    while !(seen.contains("\"courier_id\":\"live-a\"")
        && seen.contains("\"courier_id\":\"live-b\""))
    {
        assert!(Instant::now() < deadline, "the stream showed only: {seen}");
        if round % 20 == 0 {
            assert_eq!(a.post_json(&at("live-a", 1.0, 1.0, 1)).await.0, 202);
            assert_eq!(b.post_json(&at("live-b", 2.0, 2.0, 1)).await.0, 202);
        }
        round += 1;
        if let Ok(chunk) = tokio::time::timeout(Duration::from_millis(50), res.chunk()).await {
            let chunk = chunk.expect("readable").expect("open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A redis-server of this test's own on a free port.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[actix_rt::test]
async fn a_store_outage_leaves_ingestion_accepting_and_reads_unavailable_then_recovers() {
    let mut redis = OwnRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let app = app_on(&url, "outage:").await;
    let before = at("outage-1", 5.0, 5.0, 30);
    assert_eq!(app.post_json(&before).await.0, 202);
    wait_field(
        &app.base,
        &app.token,
        "/v1/couriers/outage-1/position",
        "event_id",
        &before["event_id"],
    )
    .await;

    redis.stop();
    let during = at("outage-1", 6.0, 6.0, 20);
    let started = Instant::now();
    assert_eq!(
        app.post_json(&during).await.0,
        202,
        "ingestion does not depend on the store"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    for path in [
        "/v1/couriers/outage-1/position",
        "/v1/couriers/near?lat=5&lon=5&radius_m=100",
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 503, "{path}");
        assert_eq!(
            res.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], "store_unavailable");
    }
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "the write path stays ready");
    wait_for(
        "the dropped update counted",
        Duration::from_secs(10),
        || async { app.metric("ingest_store_updates_dropped_total").await >= 1.0 },
    )
    .await;
    assert_eq!(app.metric("ingest_store_up").await, 0.0);

    // The store comes back (empty: nothing was persisted) and the service
    // uses it again without a restart.
    let _redis = OwnRedis::start(redis.port);
    let after = at("outage-1", 7.0, 7.0, 10);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(app.post_json(&after).await.0, 202);
        let (status, body) = get(
            &client,
            &app.base,
            &app.token,
            "/v1/couriers/outage-1/position",
        )
        .await;
        if status == 200 && body["event_id"] == after["event_id"] {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.metric("ingest_store_up").await, 1.0);
}

/// An app with a dispatch key, on the shared store under `prefix` when given.
async fn app_with_dispatch(redis_prefix: Option<&str>) -> (TestApp, String) {
    let (dispatch, line) = create_key("dispatch", None).expect("key");
    let redis_prefix = redis_prefix.map(str::to_owned);
    let app = spawn_app_with(move |s| {
        s.dispatch_api_keys = Some(line);
        if let Some(prefix) = redis_prefix {
            s.redis_url = Some(SHARED_REDIS.into());
            s.redis_key_prefix = prefix;
            s.redis_timeout_ms = 300;
            s.tracker_ttl_secs = 600;
        }
    })
    .await;
    (app, dispatch)
}

async fn erase(app: &TestApp, key: Option<&str>, courier: &str) -> (u16, Value) {
    let mut req = app
        .client
        .delete(format!("{}/v1/couriers/{courier}/position", app.base));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn near_ids(app: &TestApp) -> Vec<String> {
    let (status, body) = get(
        &app.client,
        &app.base,
        &app.token,
        "/v1/couriers/near?lat=0&lon=0&radius_m=5000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["couriers"]
        .as_array()
        .expect("couriers")
        .iter()
        .filter_map(|c| c["courier_id"].as_str().map(str::to_owned))
        .collect()
}

/// Erasure of one courier (issue 15's erasure DAG calls it): only a dispatch
/// key, the courier's latest position and nearby entry gone, the other
/// courier untouched, `204` again on a repeat.
async fn erasing_a_courier_removes_it_and_only_it(app: &TestApp, dispatch: &str, tag: &str) {
    let (gone, kept) = (format!("{tag}-gone"), format!("{tag}-kept"));
    let positions = json!({"positions": [
        at(&gone, north_of_origin(100.0), 0.0, 5),
        at(&gone, north_of_origin(200.0), 0.0, 2),
        at(&kept, north_of_origin(300.0), 0.0, 2),
    ]});
    assert_eq!(app.post_json(&positions).await.0, 202);
    for courier in [&gone, &kept] {
        wait_field(
            &app.base,
            &app.token,
            &format!("/v1/couriers/{courier}/position"),
            "courier_id",
            &json!(courier),
        )
        .await;
    }
    wait_for(
        "both in the nearby index",
        Duration::from_secs(10),
        || async {
            let ids = near_ids(app).await;
            ids.contains(&gone) && ids.contains(&kept)
        },
    )
    .await;

    for (key, what) in [
        (None, "no key"),
        (Some(app.token.as_str()), "a courier-app key"),
    ] {
        let (status, body) = erase(app, key, &gone).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    let (status, body) = erase(app, Some(dispatch), "not a courier id").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "courier_id", "{body}");
    let (status, _) = get(
        &app.client,
        &app.base,
        &app.token,
        &format!("/v1/couriers/{gone}/position"),
    )
    .await;
    assert_eq!(status, 200, "refused erasures leave the courier");

    assert_eq!(erase(app, Some(dispatch), &gone).await.0, 204);
    let (status, body) = get(
        &app.client,
        &app.base,
        &app.token,
        &format!("/v1/couriers/{gone}/position"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let ids = near_ids(app).await;
    assert!(!ids.contains(&gone) && ids.contains(&kept), "{ids:?}");
    // Idempotent: again, and for a courier never seen.
    assert_eq!(erase(app, Some(dispatch), &gone).await.0, 204);
    assert_eq!(
        erase(app, Some(dispatch), &format!("{tag}-never")).await.0,
        204
    );
    assert_eq!(app.metric("ingest_couriers_erased_total").await, 3.0);
    let (status, _) = get(
        &app.client,
        &app.base,
        &app.token,
        &format!("/v1/couriers/{kept}/position"),
    )
    .await;
    assert_eq!(status, 200, "the other courier is kept");
}

#[actix_rt::test]
async fn erasure_on_the_shared_store_removes_every_key_of_the_courier() {
    let prefix = prefix();
    let (app, dispatch) = app_with_dispatch(Some(&prefix)).await;
    erasing_a_courier_removes_it_and_only_it(&app, &dispatch, "erase").await;
    // In Redis itself: no position hash, no geo or last-seen member left.
    let client = redis::Client::open(SHARED_REDIS).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}pos:erase-gone"))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
    for index in ["geo", "seen"] {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{prefix}{index}"))
            .arg("erase-gone")
            .query_async(&mut conn)
            .await
            .expect("ZSCORE");
        assert_eq!(score, None, "erase-gone is still in {index}");
        let kept: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{prefix}{index}"))
            .arg("erase-kept")
            .query_async(&mut conn)
            .await
            .expect("ZSCORE");
        assert!(kept.is_some(), "erase-kept left {index}");
    }
}

#[actix_rt::test]
async fn erasure_on_the_embedded_store() {
    let (app, dispatch) = app_with_dispatch(None).await;
    erasing_a_courier_removes_it_and_only_it(&app, &dispatch, "erase-local").await;
}
