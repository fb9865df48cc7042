//! One `POST /v1/positions` body, parsed and checked as the HTTP handler
//! does: any bytes must give positions, rejections or a body error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: courier_fuzz::write_seeds_from_env("json_body"),
    |data: &[u8]| courier_fuzz::json_body(data)
);
