//! Dedup, reorder and the feed check on hostile packets: see
//! `fuzz/check/tap.rs` for the input's layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../check/tap.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::run(data);
});
