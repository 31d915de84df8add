//! Control-message parsing on arbitrary bytes: never panics or reads out
//! of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let a = zeek_udp_source::cmsg::parse(data);
    if let Some(ts) = a.timestamp {
        assert!(ts.nsec < 1_000_000_000);
    }
});
