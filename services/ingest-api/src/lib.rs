//! ingest-api: the front door of the courier position platform.
//!
//! Courier apps `POST` GPS positions; the service authenticates the app,
//! validates every position, encodes it as Avro, aggregates positions per
//! shard into Avro container records, and answers `202` only once the
//! records are durably in the stream (Amazon Kinesis or the embedded local
//! stream). See `docs/architecture.md` for the actor topology.
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod http;
pub mod inspect;
pub mod live;
pub mod metrics;
pub mod payload;
pub mod pipeline;
pub mod store;
pub mod telemetry;

pub use app::Application;
pub use config::Settings;
