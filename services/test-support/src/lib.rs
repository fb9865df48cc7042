//! Helpers the services' tests share (a dev-dependency only, never shipped):
//!
//! - [`moto`]: a real Kinesis and S3 API server, `moto_server` from PyPI,
//!   started on a free loopback port per test and killed on drop, with a
//!   client and stream helpers;
//! - [`fault_proxy`]: a proxy in front of it that injects the faults a real
//!   server cannot produce (throttled entries, a dropped connection, a hung
//!   call, a lost answer, expired records), speaking the real protocols.
#![allow(missing_docs)]

pub mod fault_proxy;
pub mod moto;
