//! courier-sim: a simulated courier fleet for the ingestion API.
//!
//! It is the reference client for courier-app developers (batching, keeping
//! `event_id` on retries, backing off on `429`/`503`) and the platform's load
//! generator. Deterministic with a seed: the same seed gives the same
//! couriers, routes and event ids (timestamps are wall-clock).
#![warn(missing_docs)]

pub mod fleet;
pub mod sim;
