//! The path parser: any string parses or fails with a message, never panics;
//! what parses prints back to a path that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zeek_udp_source::path::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text) {
        Ok(p) => {
            let again = parse(&p.to_string()).expect("a printed path parses");
            assert_eq!(again.encap, p.encap);
            assert_eq!(again.link_type, p.link_type);
        }
        Err(e) => assert!(!e.problem.is_empty()),
    }
});
