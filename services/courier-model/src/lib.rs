//! The shared model of the courier position platform.
//!
//! - [`position`]: the courier position and its domain types, parsed once at
//!   the edge (`CourierId`, `Latitude`, ...), with every validation rule.
//! - [`payload`]: the `POST /v1/positions` JSON body parser, which collects
//!   every problem per position and field (ingest-api's front door; here so
//!   the fuzz targets build it without the server).
//! - [`avro`]: the Avro schema (`schema/courier_position.avsc`), the datum
//!   encoder and the stream record format (one Avro object container file per
//!   record), and the decoder with schema resolution.
//!
//! The stream the records travel on (Kinesis or the local file-backed
//! stream) is the `courier-stream` crate.
//!
//! ```
//! use courier_model::avro::{Codec, RecordEncoder, decode_record, encode_datum};
//! use courier_model::position::{Position, TimeRules, UncheckedPosition};
//!
//! let now = chrono::Utc::now();
//! let input = UncheckedPosition {
//!     courier_id: Some("courier-7"),
//!     lat: Some(-23.56),
//!     lon: Some(-46.65),
//!     recorded_at: Some(now),
//!     ..Default::default()
//! };
//! let position = Position::try_new(&input, now, &TimeRules::default()).unwrap();
//! let mut datums = Vec::new();
//! encode_datum(&position, &mut datums);
//! let record = RecordEncoder::new(Codec::Zstandard).encode(&datums, 1);
//! let decoded = decode_record(&record).unwrap();
//! assert_eq!(decoded[0].as_ref().unwrap().courier_id, "courier-7");
//! ```
#![warn(missing_docs)]

pub mod avro;
pub mod payload;
pub mod position;
