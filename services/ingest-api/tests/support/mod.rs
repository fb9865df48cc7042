//! Test harness shared by the integration tests: spawns the service on a
//! free loopback port with its own data directory and API key.
#![allow(dead_code)]

pub mod binary;

use std::path::Path;
use std::time::{Duration, Instant};

use courier_model::avro::{AvroPosition, decode_record};
use courier_stream::local::LocalStreamReader;
use ingest_api::app::{Application, ShutdownTrigger};
use ingest_api::auth::create_key;
use ingest_api::config::Settings;

pub struct TestApp {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub settings: Settings,
    pub shutdown: ShutdownTrigger,
    pub stopped: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
}

/// Settings for a test: local sink in a fresh directory, port 0, short linger.
pub fn test_settings(data_dir: &Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_workers: 2,
        data_dir: data_dir.to_path_buf(),
        linger_ms: 5,
        refresh_secs: 1,
        shutdown_grace_secs: 10,
        ..Settings::default()
    }
}

/// Starts the app with `tweak` applied to the test settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("tmp dir");
    let (token, line) = create_key("test-client", None).expect("key");
    let mut settings = test_settings(data_dir.path());
    settings.api_keys = Some(line);
    tweak(&mut settings);
    spawn_with_settings(settings, token, data_dir).await
}

pub async fn spawn_with_settings(
    settings: Settings,
    token: String,
    data_dir: tempfile::TempDir,
) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    adopt(app, settings, token, data_dir).await
}

/// Runs a built app in the background and waits until it is ready.
pub async fn adopt(
    app: Application,
    settings: Settings,
    token: String,
    data_dir: tempfile::TempDir,
) -> TestApp {
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_trigger();
    let (tx, stopped) = tokio::sync::oneshot::channel();
    actix_rt::spawn(async move {
        let _ = tx.send(app.run_until_stopped().await);
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let app = TestApp {
        base,
        token,
        client,
        data_dir,
        settings,
        shutdown,
        stopped,
    };
    app.wait_ready(Duration::from_secs(20)).await;
    app
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestApp {
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = format!("{}/readyz", self.base);
        let client = self.client.clone();
        wait_for("readiness", timeout, || {
            let client = client.clone();
            let url = url.clone();
            async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) }
        })
        .await;
    }

    pub fn post(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/positions", self.base))
            .bearer_auth(&self.token)
            .json(body)
    }

    pub async fn post_json(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let res = self.post(body).send().await.expect("request");
        let status = res.status().as_u16();
        let json = res.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        metric_value(&text, name)
    }

    /// Every position in the local stream.
    pub fn stream_positions(&self) -> Vec<AvroPosition> {
        read_local_stream(self.data_dir.path(), &self.settings.stream_name)
    }
}

/// Sum of a metric's samples whose line starts with `name` (labels included in `name` if given).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn read_local_stream(data_dir: &Path, stream: &str) -> Vec<AvroPosition> {
    let reader = LocalStreamReader::open(data_dir, stream).expect("stream exists");
    let mut out = Vec::new();
    for shard in reader.map().shards() {
        let mut cursor = reader.cursor(&shard.shard_id, None).expect("cursor");
        loop {
            let batch = cursor.next_batch(1000).expect("read");
            if batch.is_empty() {
                break;
            }
            for record in batch {
                for datum in decode_record(&record.data).expect("a readable Avro container") {
                    let p = datum.expect("datum");
                    // Every position is on the shard its courier hashes to.
                    assert_eq!(
                        reader.map().index_for_key(&p.courier_id),
                        reader
                            .map()
                            .shards()
                            .iter()
                            .position(|s| s.shard_id == shard.shard_id)
                            .expect("shard"),
                        "courier {} on the wrong shard",
                        p.courier_id
                    );
                    out.push(p);
                }
            }
        }
    }
    out
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn position(courier: &str, event_id: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": event_id,
        "courier_id": courier,
        "lat": -23.55,
        "lon": -46.63,
        "recorded_at": now_rfc3339(),
        "speed_mps": 5.0,
    })
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
