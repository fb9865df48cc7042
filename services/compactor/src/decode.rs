//! Stage two, decode: one stream record becomes valid positions (handed to
//! the rows stage) and dead letters. Only what cannot be decoded or is
//! structurally invalid is dead-lettered: the time window is the ingestion
//! service's rule, applied once at receipt, never again here.

use base64::Engine as _;
use courier_model::avro::{AvroDatum, DecodeLimits, visit_record};
use courier_model::position::{Position, TimeRules};
use serde_json::{Value, json};

use crate::dead_letters::DeadLetters;
use crate::rows::RowWriter;
use crate::source::SourceRecord;
use crate::{CompactorError, SequenceNumber};

/// Decodes `record` of `shard_id`: valid positions to `rows`, the rest to
/// `dead` with the reason, except the positions of erased couriers (valid or
/// not: a dead letter would copy them), which are dropped and counted in
/// `erased.skipped`. Returns the positions the record declared and the
/// positions decoded from it.
///
/// The datums are read borrowed from the decoded block and validated
/// straight into [`Position`]s; what they yield is acted on only once the
/// whole record has decoded (a damaged record is one dead letter, whole).
pub(crate) async fn decode_into(
    record: &SourceRecord,
    shard_id: &str,
    limits: &DecodeLimits,
    rows: &mut RowWriter,
    dead: &mut DeadLetters,
    erased: &mut Erased,
) -> Result<(u64, u64), CompactorError> {
    let seq = &record.sequence_number;
    let mut valid: Vec<Position> = Vec::new();
    let mut letters: Vec<Value> = Vec::new();
    let (mut decoded, mut skipped) = (0u64, 0u64);
    let visited = visit_record(&record.data, limits, |index, datum| {
        let avro = match datum {
            Ok(a) => a,
            Err(e) => {
                letters.push(undecodable(
                    shard_id,
                    seq,
                    Some(index),
                    e.to_string(),
                    &record.data,
                ));
                return;
            }
        };
        decoded += 1;
        if erased.couriers.contains(avro.courier_id) {
            skipped += 1;
            return;
        }
        match avro.validate(&TimeRules::UNBOUNDED) {
            Ok(position) => valid.push(position),
            Err(errors) => {
                let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
                letters.push(json!({
                    "kind": "invalid",
                    "reasons": reasons,
                    "shard_id": shard_id,
                    "sequence_number": seq.as_str(),
                    "datum_index": index,
                    "position": avro_json(&avro),
                }));
            }
        }
    });
    let declared = match visited {
        Ok(count) => count as u64,
        Err(e) => {
            dead.push(undecodable(
                shard_id,
                seq,
                None,
                e.to_string(),
                &record.data,
            ))
            .await?;
            return Ok((0, 0));
        }
    };
    erased.skipped += skipped;
    for position in valid {
        rows.push(position).await?;
    }
    for letter in letters {
        dead.push(letter).await?;
    }
    Ok((declared, decoded))
}

/// The couriers whose erasure was requested (`<table>/_erasure/`), and how
/// many of their positions a run dropped.
#[derive(Debug, Default)]
pub(crate) struct Erased {
    pub(crate) couriers: std::collections::BTreeSet<String>,
    pub(crate) skipped: u64,
}

fn avro_json(p: &AvroDatum<'_>) -> Value {
    json!({
        "event_id": p.event_id,
        "courier_id": p.courier_id,
        "lat": p.lat,
        "lon": p.lon,
        "recorded_at": p.recorded_at,
        "received_at": p.received_at,
        "accuracy_m": p.accuracy_m,
        "speed_mps": p.speed_mps,
        "heading_deg": p.heading_deg,
        "order_id": p.order_id,
    })
}

fn undecodable(
    shard_id: &str,
    seq: &SequenceNumber,
    index: Option<usize>,
    error: String,
    data: &[u8],
) -> Value {
    json!({
        "kind": "undecodable",
        "reasons": [error],
        "shard_id": shard_id,
        "sequence_number": seq.as_str(),
        "datum_index": index,
        "data_base64": base64::engine::general_purpose::STANDARD.encode(data),
    })
}
