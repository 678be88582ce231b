//! Fuzz target `proxy_decode`: arbitrary bytes through the PROXY protocol
//! header decoder, fed as the gateway feeds it — each read at most the
//! bytes the decoder asks for (fewer when the first input byte, the
//! "socket's" chunk size, says so) — and then all at once.
//!
//! Properties checked beyond "no panic": reading what the decoder asks for
//! never goes past the header (a decoded header consumed exactly the bytes
//! read), a header is within its version's limit, and bytes after a whole
//! header do not change its result.
#![no_main]

use imgate_codecs::proxy::{decode, Decoded, V1_MAX_LEN, V2_MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (chunk, data) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 32) + 1, rest),
        None => return,
    };
    let mut have = 0;
    loop {
        match decode(&data[..have]) {
            Ok(Decoded::NeedMore { at_least }) => {
                assert!(at_least > 0);
                let take = at_least.min(chunk);
                if have + take > data.len() {
                    break;
                }
                have += take;
                assert!(have <= V1_MAX_LEN.max(V2_MAX_LEN));
            }
            Ok(Decoded::Done { source, consumed }) => {
                assert_eq!(consumed, have, "read past the header");
                let limit = if data[0] == b'P' {
                    V1_MAX_LEN
                } else {
                    V2_MAX_LEN
                };
                assert!(consumed <= limit);
                assert_eq!(
                    decode(data),
                    Ok(Decoded::Done { source, consumed }),
                    "trailing bytes change the result"
                );
                return;
            }
            Err(e) => {
                // An error stays an error with more bytes after it.
                assert_eq!(decode(data), Err(e));
                return;
            }
        }
    }
    if let Ok(Decoded::NeedMore { at_least }) = decode(data) {
        assert!(at_least > 0);
    }
});
