//! Stage five, dead letters: what cannot be decoded or is structurally
//! invalid goes to a JSON-lines file per attempt, with the reason, the shard
//! and the sequence number.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::CompactorError;
use crate::location::{Location, StreamedObject};

pub(crate) struct DeadLetters {
    location: Location,
    name: String,
    /// Opened on the first dead letter (no directory or file without one).
    out: Option<StreamedObject>,
    line: Vec<u8>,
    pub(crate) count: u64,
    /// Dead letters by reason: each rule an invalid position broke (`field:
    /// rule`, no values), or `undecodable record`; at most [`MAX_REASONS`]
    /// distinct keys, the rest under [`OTHER_REASONS`]. It travels in the run
    /// report and the commit, so the DAG can name the reasons without reading
    /// the files (which hold raw payloads and stay out of its reach in AWS).
    pub(crate) reasons: BTreeMap<String, u64>,
}

/// Distinct reasons counted per run, at most.
pub(crate) const MAX_REASONS: usize = 64;
/// The key for reasons past [`MAX_REASONS`].
pub(crate) const OTHER_REASONS: &str = "other reasons";
/// The key for records or datums that could not be decoded (the file holds each error).
pub(crate) const UNDECODABLE: &str = "undecodable record";

impl DeadLetters {
    /// Named per attempt (`run-<run>-<attempt>.jsonl`): a racing loser or a
    /// crashed attempt of the same run can never overwrite or delete the
    /// winner's file; the commit names the winner's (`courier.report`).
    pub(crate) fn new(location: Location, run: i64, attempt: &str) -> Self {
        Self {
            location,
            name: format!("run-{run:020}-{attempt}.jsonl"),
            out: None,
            line: Vec::new(),
            count: 0,
            reasons: BTreeMap::new(),
        }
    }

    pub(crate) async fn push(&mut self, entry: Value) -> Result<(), CompactorError> {
        let out = match &mut self.out {
            Some(out) => out,
            None => self.out.insert(StreamedObject::new(
                self.location.store()?,
                &self.name,
                self.location.display_of(&self.name),
            )),
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &entry)
            .map_err(|e| CompactorError::State(format!("serialize a dead letter: {e}")))?;
        self.line.push(b'\n');
        out.write(&self.line).await?;
        self.count += 1;
        self.count_reasons(&entry);
        Ok(())
    }

    fn count_reasons(&mut self, entry: &Value) {
        if entry["kind"] != "invalid" {
            self.count_reason(UNDECODABLE);
            return;
        }
        let reasons = entry["reasons"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for reason in reasons.iter().filter_map(Value::as_str) {
            self.count_reason(rule_of(reason));
        }
    }

    fn count_reason(&mut self, reason: &str) {
        let key = if self.reasons.contains_key(reason) || self.reasons.len() < MAX_REASONS {
            reason
        } else {
            OTHER_REASONS
        };
        *self.reasons.entry(key.to_owned()).or_default() += 1;
    }

    /// Completes the upload; no file when there is nothing to report.
    pub(crate) async fn finish(self) -> Result<Option<String>, CompactorError> {
        match self.out {
            Some(out) => {
                out.finish().await?;
                Ok(Some(self.location.display_of(&self.name)))
            }
            None => Ok(None),
        }
    }
}

/// A reason without the value that broke the rule: courier-model's field
/// errors end in ` (got <value>)` or ` (found <value>)`, which would make one
/// key per value (and carry payload data into the report).
fn rule_of(reason: &str) -> &str {
    if !reason.ends_with(')') {
        return reason;
    }
    [" (got ", " (found "]
        .iter()
        .filter_map(|marker| reason.rfind(marker))
        .max()
        .map_or(reason, |at| &reason[..at])
}

#[cfg(test)]
mod tests {
    use super::rule_of;

    #[test]
    fn a_reason_keeps_its_rule_and_drops_the_value() {
        assert_eq!(
            rule_of("lat: must be a number between -90 and 90 (got 200)"),
            "lat: must be a number between -90 and 90"
        );
        assert_eq!(
            rule_of("courier_id: may contain only A-Z, a-z, 0-9, '_' and '-' (found \"a b\")"),
            "courier_id: may contain only A-Z, a-z, 0-9, '_' and '-'"
        );
        assert_eq!(rule_of("lat: is required"), "lat: is required");
        assert_eq!(
            rule_of("event_id: must be a UUID (v7)"),
            "event_id: must be a UUID (v7)"
        );
    }
}
