//! One or two local stream segment files, read by the stream's reader (and
//! recovered by its writer): any bytes must give records or an error, never a
//! panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: courier_fuzz::write_seeds_from_env("local_frame_reader"),
    |data: &[u8]| courier_fuzz::local_frame_reader(data)
);
