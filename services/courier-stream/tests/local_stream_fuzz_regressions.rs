//! Regressions found by the `local_frame_reader` fuzz target (fuzz/): inputs
//! that made the local stream's reader panic or hang, as plain tests.

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use courier_stream::local::{LocalOptions, LocalStream, LocalStreamReader};
use courier_stream::shard_id_for_index;

const STREAM: &str = "s";

/// Writes three records to a one-shard stream, one segment each (segments
/// `1`, `2` and `3`), and returns the shard's directory.
fn three_segments(dir: &Path) -> std::path::PathBuf {
    let options = LocalOptions {
        shards: 1,
        segment_bytes: 1,
        ..LocalOptions::default()
    };
    let stream = LocalStream::open(dir, STREAM, options).expect("open the stream");
    for data in ["one", "two", "three"] {
        stream
            .append(0, &[("key", data.as_bytes())])
            .expect("append");
    }
    let shard_dir = dir.join(STREAM).join(shard_id_for_index(0));
    let mut names: Vec<String> = fs::read_dir(&shard_dir)
        .expect("list the shard")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [1, 2, 3].map(|n| format!("{n:020}.seg")),
        "one segment per record"
    );
    shard_dir
}

/// What a cursor from the start of shard 0 reads: the sequence numbers it
/// returned, and the error that stopped it, if any. Fails the test when the
/// reader does not finish (the fuzzer found it looping forever).
fn read_shard(dir: &Path) -> (Vec<u64>, Option<String>) {
    let dir = dir.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = LocalStreamReader::open(&dir, STREAM).expect("open a reader");
        let mut cursor = reader.cursor(&shard_id_for_index(0), None).expect("cursor");
        let mut seqs = Vec::new();
        let mut error = None;
        for _ in 0..100 {
            match cursor.next_batch(10) {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => seqs.extend(batch.iter().map(|r| r.sequence_number)),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let _ = tx.send((seqs, error));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the reader finishes (it looped forever on a hole between segments)")
}

/// The records at `missing` are gone, the others are there (record 3 is);
/// the reader either reads on past the hole or reports it, never returns a
/// missing record, never returns one twice.
fn assert_reads_past_the_hole(seqs: &[u64], error: Option<&str>, missing: &[u64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers go forward: {seqs:?}"
    );
    assert!(
        !seqs.iter().any(|s| missing.contains(s)),
        "a missing record was returned: {seqs:?}"
    );
    assert!(
        seqs.contains(&3) || error.is_some(),
        "the reader neither read on to record 3 nor reported the hole: {seqs:?}"
    );
}

#[test]
fn a_segment_missing_between_two_others_does_not_make_the_reader_loop() {
    let dir = tempfile::tempdir().expect("tmp");
    let shard_dir = three_segments(dir.path());
    // An operator moved the middle segment aside.
    fs::remove_file(shard_dir.join(format!("{:020}.seg", 2))).expect("remove segment 2");
    let (seqs, error) = read_shard(dir.path());
    assert_reads_past_the_hole(&seqs, error.as_deref(), &[2]);
}

#[test]
fn an_empty_segment_before_a_newer_one_does_not_make_the_reader_loop() {
    // The fuzzer's input: an empty first segment and a newer one after it.
    let dir = tempfile::tempdir().expect("tmp");
    let shard_dir = three_segments(dir.path());
    fs::write(shard_dir.join(format!("{:020}.seg", 1)), b"").expect("empty segment 1");
    let (seqs, error) = read_shard(dir.path());
    assert_reads_past_the_hole(&seqs, error.as_deref(), &[1]);
    if error.is_none() {
        assert_eq!(seqs, [2, 3]);
    }
}
