//! Black-box tests of the HTTP API on the local stream: every status code,
//! each test on its own port, data directory and key.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

#[actix_rt::test]
async fn a_single_position_is_202_and_durably_in_the_stream() {
    let app = spawn_app().await;
    let event_id = new_event_id();
    let mut body = position("courier-1", &event_id);
    body["order_id"] = json!("order-7");
    let (status, json) = app.post_json(&body).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json, json!({"accepted": 1, "rejected": []}));

    let stored = app.stream_positions();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, event_id);
    assert_eq!(stored[0].courier_id, "courier-1");
    assert_eq!(stored[0].order_id.as_deref(), Some("order-7"));
    assert_eq!(stored[0].speed_mps, Some(5.0));
}

#[actix_rt::test]
async fn a_batch_is_202_with_the_invalid_positions_listed_by_index_and_field() {
    let app = spawn_app().await;
    let good: Vec<Value> = (0..5)
        .map(|i| position(&format!("courier-{i}"), &new_event_id()))
        .collect();
    let mut bad_lat = position("courier-x", &new_event_id());
    bad_lat["lat"] = json!(91.5);
    let mut typo = position("courier-y", &new_event_id());
    typo["speed_mph"] = json!(3);
    let mut items = good.clone();
    items.insert(2, bad_lat);
    items.push(typo);
    let (status, json) = app.post_json(&json!({ "positions": items })).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["accepted"], 5);
    let rejected = json["rejected"].as_array().expect("array");
    assert_eq!(rejected.len(), 2, "{json}");
    assert_eq!(rejected[0]["index"], 2);
    assert_eq!(rejected[0]["field"], "lat");
    assert!(
        rejected[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("between -90 and 90")
    );
    assert_eq!(rejected[1]["index"], 6);
    assert_eq!(rejected[1]["field"], "speed_mph");
    assert!(
        rejected[1]["error"]
            .as_str()
            .unwrap_or("")
            .contains("did you mean \"speed_mps\"")
    );

    let stored: HashSet<String> = app
        .stream_positions()
        .into_iter()
        .map(|p| p.event_id)
        .collect();
    let expected: HashSet<String> = good
        .iter()
        .map(|p| p["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stored, expected);
}

#[actix_rt::test]
async fn a_position_without_event_id_gets_a_server_assigned_uuid_v7() {
    let app = spawn_app().await;
    let mut body = position("courier-1", "unused");
    body.as_object_mut().expect("object").remove("event_id");
    let (status, _) = app.post_json(&body).await;
    assert_eq!(status, 202);
    let stored = app.stream_positions();
    let id = uuid::Uuid::parse_str(&stored[0].event_id).expect("uuid");
    assert_eq!(id.get_version_num(), 7);
}

#[actix_rt::test]
async fn no_valid_position_is_422_with_every_broken_rule() {
    let app = spawn_app().await;
    let body = json!({"positions": [
        {"courier_id": "bad id", "lat": 1, "lon": 2, "recorded_at": now_rfc3339()},
        {"courier_id": "c", "lat": 1, "lon": 2, "recorded_at": "2000-01-01T00:00:00Z"},
        "not an object"
    ]});
    let (status, json) = app.post_json(&body).await;
    assert_eq!(status, 422, "{json}");
    assert_eq!(json["accepted"], 0);
    let fields: Vec<(u64, &str)> = json["rejected"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(99),
                r["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(fields, [(0, "courier_id"), (1, "recorded_at"), (2, "$")]);
    assert!(app.stream_positions().is_empty());
}

#[actix_rt::test]
async fn malformed_json_is_400_with_line_and_column() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/v1/positions", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body("{\n  \"courier_id\": \"c\",\n  \"lat\": 1,,\n}")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"], "malformed_json");
    assert_eq!(json["line"], 3);
    assert_eq!(json["column"], 12);
}

#[actix_rt::test]
async fn a_batch_over_the_limit_is_400_naming_the_limit() {
    let app = spawn_app_with(|s| s.max_batch_positions = 3).await;
    let items: Vec<Value> = (0..4)
        .map(|i| position(&format!("c{i}"), &new_event_id()))
        .collect();
    let (status, json) = app.post_json(&json!({ "positions": items })).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "invalid_batch_size");
    assert_eq!(json["field"], "positions");
    assert!(
        json["message"].as_str().unwrap_or("").contains("1 to 3"),
        "{json}"
    );
}

#[actix_rt::test]
async fn a_body_over_the_size_limit_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 2048).await;
    let items: Vec<Value> = (0..40)
        .map(|i| position(&format!("c{i}"), &new_event_id()))
        .collect();
    let (status, json) = app.post_json(&json!({ "positions": items })).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"], "payload_too_large");
}

#[actix_rt::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    for content_type in [Some("text/plain"), None] {
        let mut req = app
            .client
            .post(format!("{}/v1/positions", app.base))
            .bearer_auth(&app.token)
            .body(position("c", &new_event_id()).to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 415);
        let json: Value = res.json().await.expect("json");
        assert_eq!(json["error"], "unsupported_media_type");
    }
}

#[actix_rt::test]
async fn a_missing_or_unknown_key_is_401() {
    let app = spawn_app().await;
    let body = position("c", &new_event_id());
    let url = format!("{}/v1/positions", app.base);
    let no_key = app
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(no_key.status(), 401);
    assert!(no_key.headers().contains_key("www-authenticate"));
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("cpk_not-a-key")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    let latest = app
        .client
        .get(format!("{}/v1/couriers/c/position", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(latest.status(), 401);
}

#[actix_rt::test]
async fn a_key_over_its_rate_limit_is_429_with_retry_after() {
    let data_dir = tempfile::tempdir().expect("tmp");
    let (token, line) = ingest_api::auth::create_key("slow-client", Some(2.0)).expect("key");
    let mut settings = test_settings(data_dir.path());
    settings.api_keys = Some(line);
    let app = spawn_with_settings(settings, token, data_dir).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let res = app
            .post(&position("c", &new_event_id()))
            .send()
            .await
            .expect("request");
        if res.status() == 429 {
            retry_after = res.headers().get("retry-after").cloned();
        }
        statuses.push(res.status().as_u16());
    }
    assert_eq!(&statuses[..2], &[202, 202]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let secs: u64 = retry_after
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=1).contains(&secs));
}

#[actix_rt::test]
async fn a_full_pipeline_is_503_with_retry_after_and_not_ready() {
    // A long linger holds the first request's positions in the budget.
    let app = spawn_app_with(|s| {
        s.linger_ms = 3000;
        s.max_batch_positions = 10;
        s.max_inflight_positions = 10;
    })
    .await;
    let items: Vec<Value> = (0..10)
        .map(|i| position(&format!("c{i}"), &new_event_id()))
        .collect();
    let first = app.post(&json!({ "positions": items })).send();
    let first = actix_rt::spawn(first);
    wait_for(
        "the first batch to hold the budget",
        Duration::from_secs(5),
        || async { app.metric("ingest_inflight_positions").await >= 10.0 },
    )
    .await;
    let res = app
        .post(&position("late", &new_event_id()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"], "unavailable");
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["checks"]["not_overloaded"], false);

    let first = first.await.expect("join").expect("first request");
    assert_eq!(first.status(), 202);
    assert_eq!(app.stream_positions().len(), 10);
    assert!(app.metric("ingest_requests_refused_total").await >= 1.0);
}

#[actix_rt::test]
async fn the_latest_position_is_the_newest_by_recorded_at_not_by_arrival() {
    let app = spawn_app().await;
    let newer = chrono::Utc::now() - chrono::TimeDelta::seconds(10);
    let older = newer - chrono::TimeDelta::seconds(60);
    let mut first = position("courier-9", &new_event_id());
    first["recorded_at"] = json!(newer.to_rfc3339());
    first["lat"] = json!(10.0);
    let mut second = position("courier-9", &new_event_id());
    second["recorded_at"] = json!(older.to_rfc3339());
    second["lat"] = json!(20.0);
    assert_eq!(app.post_json(&first).await.0, 202);
    assert_eq!(app.post_json(&second).await.0, 202);

    let url = format!("{}/v1/couriers/courier-9/position", app.base);
    wait_for(
        "the tracker to hold the courier",
        Duration::from_secs(5),
        || async {
            let res = app.client.get(&url).bearer_auth(&app.token).send().await;
            matches!(res, Ok(r) if r.status() == 200)
        },
    )
    .await;
    // The tracker applies observations in order: after the second one the
    // answer must still be the first (newer recorded_at).
    wait_for("both observations", Duration::from_secs(5), || async {
        app.metric("ingest_tracked_couriers").await >= 1.0
    })
    .await;
    let json: Value = app
        .client
        .get(&url)
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(json["lat"], 10.0, "{json}");
    assert_eq!(json["courier_id"], "courier-9");

    let unknown = app
        .client
        .get(format!("{}/v1/couriers/nobody/position", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status(), 404);
    let invalid = app
        .client
        .get(format!("{}/v1/couriers/bad%20id/position", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request");
    assert_eq!(invalid.status(), 400);
    let json: Value = invalid.json().await.expect("json");
    assert_eq!(json["field"], "courier_id");
}

#[actix_rt::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["sink"], "local");
    assert_eq!(app.post_json(&position("m", &new_event_id())).await.0, 202);
    assert_eq!(app.metric("ingest_positions_accepted_total").await, 1.0);
    assert!(app.metric("ingest_sink_records_written_total").await >= 1.0);
    assert_eq!(
        app.metric("ingest_http_requests_total{route=\"/v1/positions\",status=\"202\"}")
            .await,
        1.0
    );
}

#[actix_rt::test]
async fn wrong_methods_are_405_with_allow_and_unknown_routes_404() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/v1/positions", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let res = app
        .client
        .delete(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 405);
    let res = app
        .client
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"], "not_found");
}

/// Every status code the tests above produce, per operation, is documented,
/// and every documented route is served.
#[actix_rt::test]
async fn the_openapi_document_is_served_and_matches_the_routes() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = |path: &str, method: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    };
    let produced: [(&str, &str, &[&str]); 14] = [
        (
            "/v1/positions",
            "post",
            &[
                "202", "400", "401", "405", "413", "415", "422", "429", "503",
            ],
        ),
        (
            "/v1/couriers/{courier_id}/position",
            "get",
            &["200", "400", "401", "404", "405", "429"],
        ),
        ("/healthz", "get", &["200", "405"]),
        ("/readyz", "get", &["200", "405", "503"]),
        ("/metrics", "get", &["200", "405"]),
        ("/openapi.json", "get", &["200", "405"]),
        // Statuses produced in tests/live.rs.
        ("/v1/positions/stream", "get", &["200", "401", "405", "429"]),
        ("/map", "get", &["200", "405"]),
        // Statuses produced in tests/tracking.rs.
        ("/v1/tracking-links", "post", &["201", "400", "401"]),
        (
            "/v1/tracking-links/{link_id}",
            "delete",
            &["204", "401", "404"],
        ),
        ("/v1/track", "get", &["200", "404"]),
        ("/track", "get", &["200"]),
        // Statuses produced in tests/store.rs and tests/live.rs.
        (
            "/v1/couriers/{courier_id}/position",
            "delete",
            &["204", "400", "401"],
        ),
        ("/assets/{path}", "get", &["200", "304", "404"]),
    ];
    for (path, method, statuses) in produced {
        let docs = documented(path, method);
        for status in statuses {
            assert!(
                docs.contains(*status),
                "{method} {path} {status} is not documented"
            );
        }
        // and the route is served
        let url = format!("{}{}", app.base, path.replace("{courier_id}", "nobody"));
        let res = app
            .client
            .request(method.to_uppercase().parse().expect("method"), url)
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_ne!(res.status(), 405, "{method} {path} not served");
        assert!(
            docs.contains(res.status().as_str()),
            "{method} {path} answered an undocumented {}",
            res.status()
        );
    }
    assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(14));
}

#[actix_rt::test]
async fn a_request_larger_than_one_record_is_split_and_acknowledged_once_all_parts_are_written() {
    let app = spawn_app_with(|s| {
        s.record_max_positions = 3;
        s.local_shards = 1;
    })
    .await;
    let items: Vec<Value> = (0..10)
        .map(|_| position("same-courier", &new_event_id()))
        .collect();
    let (status, json) = app.post_json(&json!({ "positions": items })).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(app.stream_positions().len(), 10);
    assert!(app.metric("ingest_records_built_total").await >= 4.0);
    assert_eq!(app.metric("ingest_inflight_positions").await, 0.0);
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) and returns
/// its head.
async fn read_response(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return head;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect_and_get_healthz(app: &TestApp) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let addr = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let head = read_response(&mut socket).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    socket
}

/// `keep_alive_secs` is the server's keep-alive: with 1 s, an idle connection
/// is closed after about 1 s (actix's own default would keep it 5 s).
#[actix_rt::test]
async fn an_idle_connection_is_closed_after_keep_alive_secs() {
    use tokio::io::AsyncReadExt as _;
    let app = spawn_app_with(|s| s.keep_alive_secs = 1).await;
    let mut socket = connect_and_get_healthz(&app).await;
    let idle = Instant::now();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(4), socket.read(&mut byte))
        .await
        .expect("the server closes the idle connection well before 5 s")
        .expect("read");
    assert_eq!(n, 0, "the server sent data instead of closing");
    assert!(
        idle.elapsed() >= Duration::from_millis(500),
        "closed after {:?}: keep-alive is not on",
        idle.elapsed()
    );
}

/// With `keep_alive_secs` 30, a connection idle for 6 s (longer than actix's
/// 5 s default) still serves the next request: a load balancer that keeps
/// idle connections for 60 s never finds one closed under it.
#[actix_rt::test]
async fn a_connection_idle_longer_than_actix_default_is_still_served() {
    use tokio::io::AsyncWriteExt as _;
    let app = spawn_app_with(|s| s.keep_alive_secs = 30).await;
    let mut socket = connect_and_get_healthz(&app).await;
    // The idle period is the behaviour under test.
    tokio::time::sleep(Duration::from_secs(6)).await;
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write on the idle connection");
    let head = read_response(&mut socket).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// A 1 MiB body of empty items is refused for its size as soon as item
/// `max_batch_positions + 1` is parsed.
#[actix_rt::test]
async fn a_megabyte_of_empty_items_is_400_for_the_batch_size() {
    let app = spawn_app().await;
    let mut body = String::from(r#"{"positions":["#);
    while body.len() < 1024 * 1024 - 8 {
        body.push_str("{},");
    }
    body.push_str("{}]}");
    let res = app
        .client
        .post(format!("{}/v1/positions", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"], "invalid_batch_size", "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap_or("")
            .contains("1 to 1000 items (got more than 1000)"),
        "{json}"
    );
}
