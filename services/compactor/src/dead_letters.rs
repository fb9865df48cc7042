//! Stage five, dead letters: what cannot be decoded or is structurally
//! invalid goes to a JSON-lines file per attempt, with the reason, the shard
//! and the sequence number.

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
}

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
        Ok(())
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
