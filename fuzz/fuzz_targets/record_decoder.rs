//! One stream record (a Kinesis record or a local stream record), as the
//! compactor decodes it: any bytes must give positions or an error, never a
//! panic, an abort or an allocation the record's size does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: courier_fuzz::write_seeds_from_env("record_decoder"),
    |data: &[u8]| courier_fuzz::record_decoder(data)
);
