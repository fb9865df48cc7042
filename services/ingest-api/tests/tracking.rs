//! Customer tracking links, on the embedded store and on the machine's real
//! Redis at 127.0.0.1:6379 (a key prefix of each test's own): a link shows
//! its courier during the order and no other, nothing once it expired or was
//! revoked, only dispatch keys create or revoke one, a tampered or unknown
//! token is 404, and the token reaches no log line.

mod support;

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

/// An app with a dispatch key, on the shared store under `prefix` when given.
async fn app_with_dispatch(redis_prefix: Option<&str>) -> (TestApp, String) {
    let (dispatch, line) = create_key("dispatch", None).expect("key");
    let redis_prefix = redis_prefix.map(str::to_owned);
    let app = spawn_app_with(move |s| {
        s.dispatch_api_keys = Some(line);
        s.tracking_link_max_secs = 3600;
        if let Some(prefix) = redis_prefix {
            s.redis_url = Some(SHARED_REDIS.into());
            s.redis_key_prefix = prefix;
            s.redis_timeout_ms = 300;
        }
    })
    .await;
    (app, dispatch)
}

fn at(courier: &str, lat: f64, lon: f64, order: &str) -> Value {
    json!({
        "event_id": new_event_id(),
        "courier_id": courier,
        "order_id": order,
        "lat": lat,
        "lon": lon,
        "recorded_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "speed_mps": 4.0,
    })
}

fn in_secs(secs: f64) -> String {
    (Utc::now() + TimeDelta::milliseconds((secs * 1000.0) as i64))
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn create(
    app: &TestApp,
    token: Option<&str>,
    order: &str,
    courier: &str,
    expires_at: &str,
) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/v1/tracking-links", app.base))
        .json(&json!({"order_id": order, "courier_id": courier, "expires_at": expires_at}));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/track` with the token in the `X-Tracking-Token` header.
async fn track(client: &reqwest::Client, base: &str, token: &str) -> (u16, Value) {
    let res = client
        .get(format!("{base}/v1/track"))
        .header("x-tracking-token", token)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A 404 that says nothing about any courier.
fn assert_gone(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 404, "{what}: {body}");
    assert_eq!(body["error"], "tracking_link_not_found", "{what}: {body}");
    let text = body.to_string();
    for word in ["courier", "lat", "lon", "order_id", "position"] {
        assert!(
            !text.contains(word),
            "{what}: the 404 mentions {word}: {text}"
        );
    }
}

/// Polls the link until it answers `status` (with a deadline).
async fn wait_status(app: &TestApp, token: &str, status: u16, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, body) = track(&app.client, &app.base, token).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: still {got} {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn a_link_shows_its_courier_only_while_it_is_active(app: &TestApp, dispatch: &str) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (mine, other) = (format!("c-{}", &tag[..8]), format!("o-{}", &tag[..8]));
    let order = format!("order-{}", &tag[..8]);

    // Only dispatch creates links: no key, a courier-app key, a wrong key.
    let later = in_secs(600.0);
    for (key, what) in [
        (None, "no key"),
        (Some(app.token.as_str()), "a courier-app key"),
        (Some("cpk_not-a-key"), "an unknown key"),
    ] {
        let (status, body) = create(app, key, &order, &mine, &later).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.get("token").is_none(), "{what}: {body}");
    }
    assert_eq!(app.metric("ingest_tracking_links_created_total").await, 0.0);

    // The rules of the request, each naming its field.
    for (order_id, courier_id, expires_at, field) in [
        ("bad order", mine.as_str(), later.clone(), "order_id"),
        (order.as_str(), "", later.clone(), "courier_id"),
        (order.as_str(), mine.as_str(), in_secs(-1.0), "expires_at"),
        (order.as_str(), mine.as_str(), in_secs(3700.0), "expires_at"),
    ] {
        let (status, body) = create(app, Some(dispatch), order_id, courier_id, &expires_at).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }

    let (status, link) = create(app, Some(dispatch), &order, &mine, &later).await;
    assert_eq!(status, 201, "{link}");
    let token = link["token"].as_str().expect("token").to_owned();
    let link_id = link["link_id"].as_str().expect("link id").to_owned();
    assert_eq!(link["url"], format!("/track#{token}"));
    assert_eq!(link["api_url"], "/v1/track");
    assert_eq!(link["api_header"], "x-tracking-token");
    assert_eq!(link["courier_id"], mine.as_str());

    // Before the courier's first fix: active, no position.
    let (status, body) = track(&app.client, &app.base, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["order_id"], order.as_str());
    assert!(body["position"].is_null(), "{body}");

    // Both couriers move; the link shows its own, never the other.
    assert_eq!(app.post_json(&at(&mine, 10.0, 20.0, &order)).await.0, 202);
    assert_eq!(
        app.post_json(&at(&other, -30.0, -40.0, "other")).await.0,
        202
    );
    let body = wait_status_where(app, &token, |b| b["position"]["lat"] == 10.0).await;
    assert_eq!(body["position"]["lon"], 20.0, "{body}");
    assert!(!body.to_string().contains(&other), "{body}");
    assert_eq!(
        app.post_json(&at(&other, -31.0, -41.0, "other")).await.0,
        202
    );
    assert_eq!(app.post_json(&at(&mine, 11.0, 21.0, &order)).await.0, 202);
    let body = wait_status_where(app, &token, |b| b["position"]["lat"] == 11.0).await;
    assert_eq!(body["position"]["lon"], 21.0, "{body}");
    let other_pos = format!("/v1/couriers/{other}/position");
    let res = app
        .client
        .get(format!("{}{other_pos}", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request");
    let latest_other: Value = res.json().await.expect("json");
    assert_eq!(latest_other["lat"], -31.0, "the other courier is known");
    let (_, body) = track(&app.client, &app.base, &token).await;
    assert_eq!(
        body["position"]["lat"], 11.0,
        "still only its own courier: {body}"
    );

    // Tampered, unknown, malformed: 404 like any inactive link.
    let mut tampered = token.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = format!("trk_{}", "x".repeat(43));
    for (t, what) in [
        (tampered.as_str(), "tampered"),
        (unknown.as_str(), "unknown"),
        ("garbage", "malformed"),
        (link_id.as_str(), "the link id instead of the token"),
    ] {
        let (status, body) = track(&app.client, &app.base, t).await;
        assert_gone(status, &body, what);
    }

    // No header at all: 404 like any inactive link. The former routes with
    // the token in the path are gone (404, no route), so no client keeps
    // sending tokens in paths that load balancers log.
    let res = app
        .client
        .get(format!("{}/v1/track", app.base))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    assert_gone(
        status,
        &res.json().await.unwrap_or(Value::Null),
        "no header",
    );
    for old in [format!("/v1/track/{token}"), format!("/track/{token}")] {
        let res = app
            .client
            .get(format!("{}{old}", app.base))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 404, "{old} is no route any more");
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"], "not_found", "{body}");
    }

    // The page (the browser opens /track#<token>; the fragment is never
    // sent): static, never cached, no referrer, nothing about the courier.
    let res = app
        .client
        .get(format!("{}/track", app.base))
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("connect-src 'self'")
    );
    let page = res.text().await.expect("html");
    assert!(
        page.contains("\"/v1/track\"") && page.contains("X-Tracking-Token"),
        "the page asks the JSON route with the token in the header"
    );
    assert!(
        page.contains("location.hash"),
        "the page reads the fragment"
    );
    assert!(!page.contains(&mine) && !page.contains(&order));

    // Revocation: only dispatch, then the link answers 404 at once.
    let revoke = |key: Option<&str>| {
        let mut req = app
            .client
            .delete(format!("{}/v1/tracking-links/{link_id}", app.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_eq!(revoke(None).await.expect("delete").status(), 401);
    assert_eq!(
        revoke(Some(&app.token)).await.expect("delete").status(),
        401
    );
    let (status, _) = track(&app.client, &app.base, &token).await;
    assert_eq!(status, 200, "still active after refused revocations");
    assert_eq!(revoke(Some(dispatch)).await.expect("delete").status(), 204);
    let (status, body) = track(&app.client, &app.base, &token).await;
    assert_gone(status, &body, "revoked");
    assert_eq!(revoke(Some(dispatch)).await.expect("delete").status(), 404);
    // The courier keeps moving; the revoked link still shows nothing.
    assert_eq!(app.post_json(&at(&mine, 12.0, 22.0, &order)).await.0, 202);
    let (status, body) = track(&app.client, &app.base, &token).await;
    assert_gone(status, &body, "revoked, after a new fix");

    // Expiry: a short link answers while active, then 404 by itself.
    let (status, short) = create(app, Some(dispatch), &order, &mine, &in_secs(3.0)).await;
    assert_eq!(status, 201, "{short}");
    let short = short["token"].as_str().expect("token").to_owned();
    let (status, body) = track(&app.client, &app.base, &short).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["position"]["lat"], 12.0, "{body}");
    let body = wait_status(app, &short, 404, "the short link to expire").await;
    assert_gone(404, &body, "expired");
    assert_eq!(app.post_json(&at(&mine, 13.0, 23.0, &order)).await.0, 202);
    let (status, body) = track(&app.client, &app.base, &short).await;
    assert_gone(status, &body, "expired, after a new fix");

    assert_eq!(app.metric("ingest_tracking_links_created_total").await, 2.0);
    assert_eq!(app.metric("ingest_tracking_links_revoked_total").await, 1.0);
    assert!(app.metric("ingest_tracking_links_served_total").await >= 4.0);
    assert!(app.metric("ingest_tracking_links_not_found_total").await >= 7.0);
}

/// Polls the link until it answers 200 with a body for which `cond` holds.
async fn wait_status_where(app: &TestApp, token: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = track(&app.client, &app.base, token).await;
        if status == 200 && cond(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the link answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_rt::test]
async fn tracking_links_on_the_embedded_store() {
    let (app, dispatch) = app_with_dispatch(None).await;
    a_link_shows_its_courier_only_while_it_is_active(&app, &dispatch).await;
}

#[actix_rt::test]
async fn tracking_links_on_the_shared_store() {
    let (app, dispatch) = app_with_dispatch(Some(&prefix())).await;
    a_link_shows_its_courier_only_while_it_is_active(&app, &dispatch).await;
}

/// Two processes on one store: a link created through one answers on the
/// other, and a revocation through the other ends it on both. Both run at
/// debug level, and no log line holds the token.
#[actix_rt::test]
async fn a_link_works_on_every_task_and_its_token_is_never_logged() {
    let prefix = prefix();
    let (key, key_line) = create_key("courier-app", None).expect("key");
    let (dispatch, dispatch_line) = create_key("dispatch", None).expect("key");
    let dirs = [
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    ];
    let start = |dir: &tempfile::TempDir| {
        RunningBinary::start(
            &["--data-dir", dir.path().to_str().expect("utf-8 path")],
            &[
                ("INGEST_API_KEYS", key_line.as_str()),
                ("INGEST_DISPATCH_API_KEYS", dispatch_line.as_str()),
                ("INGEST_REDIS_URL", SHARED_REDIS),
                ("INGEST_REDIS_KEY_PREFIX", prefix.as_str()),
                ("INGEST_LINGER_MS", "5"),
                ("RUST_LOG", "debug"),
            ],
        )
    };
    let (a, b) = (start(&dirs[0]), start(&dirs[1]));
    a.wait_ready().await;
    b.wait_ready().await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/v1/tracking-links", a.base))
        .bearer_auth(&dispatch)
        .json(&json!({"order_id": "o-shared", "courier_id": "c-shared", "expires_at": in_secs(600.0)}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let link: Value = res.json().await.expect("json");
    let token = link["token"].as_str().expect("token").to_owned();
    let link_id = link["link_id"].as_str().expect("id").to_owned();
    let res = client
        .post(format!("{}/v1/positions", a.base))
        .bearer_auth(&key)
        .json(&at("c-shared", 1.5, 2.5, "o-shared"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 202);
    wait_for(
        "the link on the other task",
        Duration::from_secs(20),
        || {
            let (client, base, token) = (client.clone(), b.base.clone(), token.clone());
            async move {
                let (status, body) = track(&client, &base, &token).await;
                status == 200 && body["position"]["lat"] == 1.5
            }
        },
    )
    .await;
    let page = client
        .get(format!("{}/track", b.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let res = client
        .delete(format!("{}/v1/tracking-links/{link_id}", b.base))
        .bearer_auth(&dispatch)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    for base in [&a.base, &b.base] {
        let (status, body) = track(&client, base, &token).await;
        assert_gone(status, &body, "revoked on the other task");
    }
    // The request logger ran for each of these requests (at debug level it
    // logs every one, by route pattern) and none of its lines holds the token.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for process in [&a, &b] {
        let log = process.log.lock().clone();
        assert!(
            log.contains("/v1/track"),
            "the request logger logged the reads:\n{log}"
        );
        assert!(!log.contains(&token), "a log line holds the token:\n{log}");
        assert!(
            !log.contains(&token[4..20]),
            "a log line holds part of the token:\n{log}"
        );
    }
}
