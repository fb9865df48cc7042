//! Building and running the service.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use courier_model::position::TimeRules;
use courier_stream::StreamSink;
use courier_stream::kinesis::{KinesisStream, KinesisTimeouts, client_from_env};
use courier_stream::local::{LocalOptions, LocalStream};
use tokio::sync::Notify;

use crate::auth::ApiKeys;
use crate::config::{Settings, SinkKind};
use crate::http::{AppState, configure, not_found, observe};
use crate::metrics::Metrics;
use crate::pipeline::batcher::BatchLimits;
use crate::pipeline::writer::RetryPolicy;
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::store::PositionStore;
use crate::store::redis::{RedisOptions, RedisStore};

/// Opens the configured stream sink.
pub async fn open_sink(settings: &Settings) -> anyhow::Result<Arc<dyn StreamSink>> {
    Ok(match settings.sink {
        SinkKind::Local => {
            let options = LocalOptions {
                shards: settings.local_shards,
                segment_bytes: settings.local_segment_bytes,
                max_bytes: (settings.local_max_bytes > 0).then_some(settings.local_max_bytes),
            };
            let stream = LocalStream::open(&settings.data_dir, &settings.stream_name, options)
                .with_context(|| {
                    format!(
                        "opening the local stream {} in {}",
                        settings.stream_name,
                        settings.data_dir.display()
                    )
                })?;
            Arc::new(stream)
        }
        SinkKind::Kinesis => {
            let timeouts = KinesisTimeouts {
                connect: Duration::from_millis(settings.kinesis_call_timeout_ms.min(2000)),
                operation: Duration::from_millis(settings.kinesis_call_timeout_ms),
            };
            let client = client_from_env(timeouts).await;
            Arc::new(KinesisStream::new(client, settings.stream_name.clone()))
        }
    })
}

/// The configured position store: Redis when `redis_url` is set, else this
/// process's trackers. Must run on the runtime that will drive the store.
pub fn open_store(
    settings: &Settings,
    pipeline: &Arc<Pipeline>,
    metrics: &Metrics,
) -> anyhow::Result<PositionStore> {
    let Some(url) = &settings.redis_url else {
        return Ok(PositionStore::Embedded(
            Arc::clone(pipeline),
            Default::default(),
        ));
    };
    let options = RedisOptions {
        url: url.clone(),
        password: settings.redis_password.clone(),
        key_prefix: settings.redis_key_prefix.clone(),
        timeout: Duration::from_millis(settings.redis_timeout_ms),
        ttl: Duration::from_secs(settings.tracker_ttl_secs.max(1)),
        max_queued: settings.store_queue_positions,
    };
    let store = RedisStore::start(options, Arc::clone(pipeline), metrics.clone())?;
    tracing::info!(prefix = %settings.redis_key_prefix, "position store: shared (redis)");
    Ok(PositionStore::Redis(store))
}

/// Asks a running [`Application`] to shut down gracefully, like SIGTERM.
#[derive(Clone, Default)]
pub struct ShutdownTrigger(Arc<Notify>);

impl ShutdownTrigger {
    /// Begins the graceful shutdown.
    pub fn trigger(&self) {
        self.0.notify_one();
    }
}

/// The built service, listening but not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    pipeline: Arc<Pipeline>,
    grace: Duration,
    shutdown: ShutdownTrigger,
}

impl Application {
    /// Binds the listener (port 0 picks a free port), opens the stream and
    /// starts the actors. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = ApiKeys::load(
            settings.api_keys_file.as_deref(),
            settings.api_keys.as_deref(),
        )?;
        let sink = open_sink(&settings).await?;
        Self::build_with_sink(settings, keys, sink).await
    }

    /// Like [`Application::build`], with an explicit sink and keys.
    pub async fn build_with_sink(
        settings: Settings,
        keys: ApiKeys,
        sink: Arc<dyn StreamSink>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new();
        let pipeline = Pipeline::start(
            sink,
            PipelineOptions {
                limits: BatchLimits {
                    max_bytes: settings.record_max_bytes,
                    max_positions: settings.record_max_positions,
                    linger: settings.linger(),
                    pacing: settings.shard_pacing(),
                },
                codec: settings.codec,
                writers: settings.writers,
                writer_concurrency: settings.writer_concurrency,
                retry: RetryPolicy {
                    base: Duration::from_millis(settings.retry_base_ms),
                    max: Duration::from_millis(settings.retry_max_ms),
                },
                write_timeout: settings.write_timeout(),
                max_inflight_positions: settings.max_inflight_positions,
                max_inflight_bytes: settings.max_inflight_bytes,
                tracker_shards: settings.tracker_shards,
                tracker_ttl: Duration::from_secs(settings.tracker_ttl_secs),
                tracker_max_couriers: settings.tracker_max_couriers,
                actor_threads: settings.actor_threads,
                stream_buffer: settings.stream_buffer,
            },
            metrics.clone(),
        );
        if let Err(e) = pipeline.refresh(true).await {
            tracing::warn!(error = %e, "the stream is not reachable yet; not ready until it is");
        }
        pipeline.spawn_refresher(Duration::from_secs(settings.refresh_secs.max(1)));

        let store = Arc::new(open_store(&settings, &pipeline, &metrics)?);
        let dispatch_keys = match settings.dispatch_api_keys.as_deref() {
            Some(text) => ApiKeys::parse(text).context("dispatch_api_keys")?,
            None => ApiKeys::default(),
        };
        let web_pages = Arc::new(crate::web::Web::load(&settings)?);
        let state = web::Data::new(AppState {
            keys,
            dispatch_keys,
            tracking_link_max: Duration::from_secs(settings.tracking_link_max_secs),
            store,
            pipeline: Arc::clone(&pipeline),
            metrics,
            rules: TimeRules {
                max_future: Duration::from_secs(settings.max_future_secs),
                max_age: Duration::from_secs(settings.max_age_secs),
            },
            max_batch: settings.max_batch_positions,
            max_body_bytes: settings.max_body_bytes,
            web: web_pages,
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(observe))
                .configure(configure)
                .default_service(web::to(not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_secs)
        .keep_alive(settings.keep_alive())
        .backlog(4096)
        .max_connections(50_000);
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        tracing::info!(
            port,
            sink = pipeline.sink_kind(),
            stream = %settings.stream_name,
            "ingest-api listening"
        );
        Ok(Self {
            port,
            server: server.run(),
            pipeline,
            grace: settings.shutdown_grace(),
            shutdown: ShutdownTrigger::default(),
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that begins a graceful shutdown.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the shutdown trigger, then stops
    /// accepting, flushes everything queued, answers every waiting request,
    /// and returns within the grace period.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = actix_rt::spawn(self.server);
        let notify = Arc::clone(&self.shutdown.0);
        let signal = async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate())?;
                let mut int = signal(SignalKind::interrupt())?;
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = notify.notified() => tracing::info!("shutdown requested"),
                }
            }
            #[cfg(not(unix))]
            {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = notify.notified() => {},
                }
            }
            Ok::<_, std::io::Error>(())
        };
        signal.await.context("installing signal handlers")?;
        shutdown(handle, &self.pipeline, self.grace).await;
        let _ = server.await;
        Ok(())
    }
}

async fn shutdown(handle: ServerHandle, pipeline: &Pipeline, grace: Duration) {
    let deadline = Instant::now() + grace;
    let started = Instant::now();
    pipeline.begin_shutdown();
    // Stop accepting connections and wait for in-flight requests (bounded by
    // the server's shutdown timeout, which is the grace period).
    handle.stop(true).await;
    let drained = pipeline.drain(deadline).await;
    pipeline.stop();
    if drained {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown complete: every accepted position is written"
        );
    } else {
        tracing::error!(
            pending = pipeline.budget().positions_in_use(),
            "grace period ended with positions still unwritten; none of them was acknowledged with 202"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::create_key;
    use courier_stream::local::LocalStreamReader;

    async fn wait_for(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn position(event_id: &str) -> serde_json::Value {
        serde_json::json!({
            "event_id": event_id,
            "courier_id": "courier-1",
            "lat": 1.0,
            "lon": 2.0,
            "recorded_at": chrono::Utc::now().to_rfc3339(),
        })
    }

    /// A writer that panics while it holds a request's record: that request
    /// answers 503 (never 202), the watchdog starts a new writer, and the
    /// service takes writes again.
    #[actix_rt::test]
    async fn a_writer_that_panics_answers_503_and_is_started_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let (token, line) = create_key("panic-test", None).expect("key");
        let settings = Settings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            http_workers: 1,
            data_dir: dir.path().to_path_buf(),
            linger_ms: 5,
            writers: 1,
            refresh_secs: 1,
            api_keys: Some(line),
            ..Settings::default()
        };
        let stream_name = settings.stream_name.clone();
        let app = Application::build(settings).await.expect("app");
        let pipeline = Arc::clone(&app.pipeline);
        let shutdown = app.shutdown_trigger();
        let base = format!("http://127.0.0.1:{}", app.port());
        let server = actix_rt::spawn(app.run_until_stopped());
        let client = reqwest::Client::new();
        let ready = |client: reqwest::Client, url: String| async move {
            matches!(client.get(&url).send().await, Ok(r) if r.status() == 200)
        };
        let readyz = format!("{base}/readyz");
        wait_for("readiness", Duration::from_secs(20), async || {
            ready(client.clone(), readyz.clone()).await
        })
        .await;

        pipeline.inject_writer_panic();
        let lost = uuid::Uuid::new_v4().to_string();
        let res = client
            .post(format!("{base}/v1/positions"))
            .bearer_auth(&token)
            .json(&position(&lost))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 503, "a request whose writer panicked");
        assert!(res.headers().contains_key("retry-after"));
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["error"], "unavailable", "{body}");

        let metrics = format!("{base}/metrics");
        wait_for(
            "the writer to be restarted",
            Duration::from_secs(10),
            async || {
                let text = client
                    .get(&metrics)
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text");
                text.lines().any(|l| l == "ingest_writer_panics_total 1")
            },
        )
        .await;
        assert!(pipeline.writers_alive());
        let checks: serde_json::Value = client
            .get(&readyz)
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        assert_eq!(checks["checks"]["writers_running"], true, "{checks}");

        let kept = uuid::Uuid::new_v4().to_string();
        let res = client
            .post(format!("{base}/v1/positions"))
            .bearer_auth(&token)
            .json(&position(&kept))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 202, "the restarted writer takes writes");

        shutdown.trigger();
        server.await.expect("join").expect("clean stop");
        let reader = LocalStreamReader::open(dir.path(), &stream_name).expect("stream");
        let mut ids = Vec::new();
        for shard in reader.map().shards() {
            let mut cursor = reader.cursor(&shard.shard_id, None).expect("cursor");
            for record in cursor.next_batch(1000).expect("read") {
                for datum in courier_model::avro::decode_record(&record.data).expect("avro") {
                    ids.push(datum.expect("datum").event_id);
                }
            }
        }
        assert_eq!(
            ids,
            [kept],
            "only the acknowledged position is in the stream"
        );
    }
}
