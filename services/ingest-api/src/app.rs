//! Building and running the service.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use courier_model::position::TimeRules;
use courier_model::stream::StreamSink;
use courier_model::stream::kinesis::{KinesisStream, KinesisTimeouts, client_from_env};
use courier_model::stream::local::{LocalOptions, LocalStream};
use tokio::sync::Notify;

use crate::auth::ApiKeys;
use crate::config::{Settings, SinkKind};
use crate::http::{AppState, configure, not_found, observe};
use crate::metrics::Metrics;
use crate::pipeline::batcher::BatchLimits;
use crate::pipeline::writer::RetryPolicy;
use crate::pipeline::{Pipeline, PipelineOptions};

/// Opens the configured stream sink.
pub async fn open_sink(settings: &Settings) -> anyhow::Result<Arc<dyn StreamSink>> {
    Ok(match settings.sink {
        SinkKind::Local => {
            let options = LocalOptions {
                shards: settings.local_shards,
                segment_bytes: settings.local_segment_bytes,
                retention: (settings.local_retention_hours > 0)
                    .then(|| Duration::from_secs(settings.local_retention_hours * 3600)),
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
                actor_threads: 0,
                stream_buffer: settings.stream_buffer,
            },
            metrics.clone(),
        );
        if let Err(e) = pipeline.refresh(true).await {
            tracing::warn!(error = %e, "the stream is not reachable yet; not ready until it is");
        }
        pipeline.spawn_refresher(Duration::from_secs(settings.refresh_secs.max(1)));

        let state = web::Data::new(AppState {
            keys,
            pipeline: Arc::clone(&pipeline),
            metrics,
            rules: TimeRules {
                max_future: Duration::from_secs(settings.max_future_secs),
                max_age: Duration::from_secs(settings.max_age_secs),
            },
            max_batch: settings.max_batch_positions,
            max_body_bytes: settings.max_body_bytes,
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
