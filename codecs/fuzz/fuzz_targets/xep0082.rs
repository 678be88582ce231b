//! Fuzz the XEP-0082 date-time parser (MAM `start`/`end` come from
//! peers): it must never panic, and whatever it accepts must be a time
//! that formats and parses back to the same millisecond.
#![no_main]

use imgate_codecs::xmpp::timestamp::{parse_xep0082, xep0082};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ms) = parse_xep0082(text) {
        assert_eq!(parse_xep0082(&xep0082(ms)), Some(ms), "{text:?} -> {ms}");
    }
});
