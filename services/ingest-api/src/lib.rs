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
pub mod pipeline;
pub mod store;
pub mod telemetry;
pub mod web;

pub use app::Application;
pub use config::Settings;
/// The `POST /v1/positions` body parser lives in the model crate (so the fuzz
/// targets build it without the server); re-exported under its old path.
pub use courier_model::payload;
