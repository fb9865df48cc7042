//! Black-box tests of the live feed `GET /v1/positions/stream` and the map
//! page `GET /map`, each on its own port, data directory and key.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::*;

/// Reads a `text/event-stream` body frame by frame, as it arrives.
struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(app: &TestApp) -> Self {
        let res = app
            .client
            .get(format!("{}/v1/positions/stream", app.base))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Self {
            res,
            buf: String::new(),
        }
    }

    /// The next frame (the text before a blank line), within `timeout`.
    async fn next_frame(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                return frame;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.res.chunk())
                .await
                .expect("a frame in time")
                .expect("the stream is readable")
                .expect("the stream is still open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Skips frames until one satisfies `pred`.
    async fn frame_where(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next_frame(left).await;
            if pred(&frame) {
                return frame;
            }
        }
    }
}

#[actix_rt::test]
async fn the_stream_needs_a_key_and_only_answers_get() {
    let app = spawn_app().await;
    let url = format!("{}/v1/positions/stream", app.base);
    let no_key = app.client.get(&url).send().await.expect("request");
    assert_eq!(no_key.status(), 401);
    assert!(no_key.headers().contains_key("www-authenticate"));
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("cpk_not-a-key")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    let post = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request");
    assert_eq!(post.status(), 405);
    assert_eq!(
        post.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
    assert_eq!(app.metric("ingest_stream_viewers").await, 0.0);
}

#[actix_rt::test]
async fn the_stream_counts_against_the_keys_rate_limit() {
    let data_dir = tempfile::tempdir().expect("tmp");
    let (token, line) = ingest_api::auth::create_key("viewer", Some(1.0)).expect("key");
    let mut settings = test_settings(data_dir.path());
    settings.api_keys = Some(line);
    let app = spawn_with_settings(settings, token, data_dir).await;
    let _first = SseReader::open(&app).await;
    let second = app
        .client
        .get(format!("{}/v1/positions/stream", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("request");
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
}

#[actix_rt::test]
async fn an_accepted_position_is_delivered_as_an_sse_data_event() {
    let app = spawn_app().await;
    let mut viewer = SseReader::open(&app).await;
    assert_eq!(
        viewer.next_frame(Duration::from_secs(5)).await,
        ": connected"
    );
    assert_eq!(app.metric("ingest_stream_viewers").await, 1.0);

    let mut body = position("live-courier-7", &new_event_id());
    body["heading_deg"] = json!(90.5);
    let (status, json) = app.post_json(&body).await;
    assert_eq!(status, 202, "{json}");
    // A rejected position is not streamed: only the accepted one arrives.
    let mut bad = position("rejected-courier", &new_event_id());
    bad["lat"] = json!(123.0);
    assert_eq!(app.post_json(&bad).await.0, 422);

    let frame = viewer
        .frame_where(Duration::from_secs(10), |f| f.starts_with("data: "))
        .await;
    let event: Value = serde_json::from_str(&frame["data: ".len()..]).expect("json data");
    assert_eq!(event["courier_id"], "live-courier-7");
    assert_eq!(event["lat"], -23.55);
    assert_eq!(event["lon"], -46.63);
    assert_eq!(event["speed_mps"], 5.0);
    assert_eq!(event["heading_deg"], 90.5);
    let recorded_at = event["recorded_at"].as_str().expect("recorded_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(recorded_at).is_ok(),
        "{recorded_at}"
    );
    // The position was durable before it was streamed.
    assert_eq!(app.stream_positions().len(), 1);

    // A viewer that went away is noticed at the next write to it (an event
    // or the keep-alive).
    drop(viewer);
    wait_for("the viewer to be gone", Duration::from_secs(10), || async {
        let (status, _) = app.post_json(&position("c", &new_event_id())).await;
        assert_eq!(status, 202);
        app.metric("ingest_stream_viewers").await == 0.0
    })
    .await;
}

#[actix_rt::test]
async fn a_viewer_that_does_not_read_neither_blocks_nor_slows_posts() {
    let app = spawn_app_with(|s| s.stream_buffer = 8).await;
    // Connected, subscribed, and never read while positions flow.
    let mut viewer = SseReader::open(&app).await;
    assert_eq!(app.metric("ingest_stream_viewers").await, 1.0);

    // 200 single positions, one after the other: each answered promptly.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let sent = Instant::now();
        let (status, json) = app
            .post_json(&position(&format!("courier-{}", i % 20), &new_event_id()))
            .await;
        assert_eq!(status, 202, "{json}");
        slowest = slowest.max(sent.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest POST took {slowest:?}"
    );
    let singles = started.elapsed();

    // Then far more than the socket buffers between us and the server hold
    // (80,000 events, ~12 MB of SSE), so the server side of the stream is
    // certainly stalled on the unread connection and its viewer falls behind.
    let batches = futures::stream::iter(0..200)
        .map(|b| {
            let items: Vec<Value> = (0..400)
                .map(|i| position(&format!("courier-{}", (b + i) % 50), &new_event_id()))
                .collect();
            let app = &app;
            async move {
                let sent = Instant::now();
                let (status, json) = app.post_json(&json!({ "positions": items })).await;
                (status, json, sent.elapsed())
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    for (status, json, took) in &batches {
        assert_eq!(*status, 202, "{json}");
        assert!(*took < Duration::from_secs(4), "a batch took {took:?}");
    }
    assert_eq!(
        app.metric("ingest_positions_accepted_total").await,
        200.0 + 200.0 * 400.0
    );

    // When it reads again, the viewer learns how much it missed and goes on.
    let lagged = viewer
        .frame_where(Duration::from_secs(60), |f| f.starts_with("event: lagged"))
        .await;
    let skipped: u64 = lagged
        .strip_prefix("event: lagged\ndata: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a lagged frame with a count: {lagged:?}"));
    assert!(skipped > 0);
    assert!(app.metric("ingest_stream_events_dropped_total").await >= skipped as f64);
    let (status, _) = app
        .post_json(&position("after-the-gap", &new_event_id()))
        .await;
    assert_eq!(status, 202);
    viewer
        .frame_where(Duration::from_secs(30), |f| f.contains("after-the-gap"))
        .await;
    eprintln!(
        "200 single POSTs in {singles:?} (slowest {slowest:?}); {skipped} events skipped for the stalled viewer"
    );
}

#[actix_rt::test]
async fn the_map_page_is_served_without_a_key_and_self_contained() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/map", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a content security policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = res.text().await.expect("html");
    for needle in [
        "<script src=\"/assets/courier-map.js\"></script>",
        "<script id=\"map-config\" type=\"application/json\">",
        "CourierMap.create",
        "id=\"courier-count\"",
        "id=\"event-count\"",
        "/v1/positions/stream",
        "Authorization",
        "#token=",
    ] {
        assert!(html.contains(needle), "the page misses {needle}");
    }
    // Nothing is loaded from elsewhere, and without a tile source not even
    // Leaflet: the grid works offline.
    for external in [
        "http://",
        "https://",
        "//cdn",
        "<link rel=\"stylesheet\"",
        "/assets/leaflet/",
    ] {
        assert!(!html.contains(external), "the page refers to {external}");
    }
    assert!(
        !csp.contains("http"),
        "no external host without tiles: {csp}"
    );
    // The map script comes from the service, with its content type.
    let script = app
        .client
        .get(format!("{}/assets/courier-map.js", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(script.headers()["x-content-type-options"], "nosniff");
    let etag = script.headers()["etag"].clone();
    assert!(
        script
            .text()
            .await
            .expect("js")
            .contains("window.CourierMap")
    );
    let again = app
        .client
        .get(format!("{}/assets/courier-map.js", app.base))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), 304);
    for missing in ["/assets/nope.js", "/assets/leaflet/../../Cargo.toml"] {
        let res = app
            .client
            .get(format!("{}{missing}", app.base))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 404, "{missing}");
    }
    let head = app
        .client
        .head(format!("{}/map", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(head.status(), 200);
    let delete = app
        .client
        .delete(format!("{}/map", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(delete.status(), 405);
}

#[actix_rt::test]
async fn shutdown_ends_the_streams_and_is_not_held_up_by_viewers() {
    let app = spawn_app().await;
    let mut viewer = SseReader::open(&app).await;
    assert_eq!(
        viewer.next_frame(Duration::from_secs(5)).await,
        ": connected"
    );
    let started = Instant::now();
    app.shutdown.trigger();
    let stopped = tokio::time::timeout(Duration::from_secs(8), app.stopped)
        .await
        .expect("stopped before the 10 s grace period")
        .expect("a result");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let end = tokio::time::timeout(Duration::from_secs(5), viewer.res.chunk())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
