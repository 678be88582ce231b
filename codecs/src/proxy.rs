//! The PROXY protocol header, versions 1 (text) and 2 (binary), as a TCP
//! load balancer puts it in front of a connection to pass on the client's
//! address (HAProxy, <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! Pure, like every codec here: [`decode`] looks at the bytes read so far
//! and says whether the header is complete ([`Decoded::Done`], with the
//! client's address and how many bytes the header took), needs more bytes
//! ([`Decoded::NeedMore`], with how many more it needs at least — reading
//! exactly that many never reads past the header into the protocol stream)
//! or is not a valid header ([`ProxyError`]). Bounded: a v1 line is at most
//! [`V1_MAX_LEN`] bytes, a v2 header at most [`V2_MAX_LEN`] (checked from
//! its length field before its body is read).
//!
//! A header with no usable client address — v1 `UNKNOWN`, v2 `LOCAL`
//! (health checks of the balancer itself), `AF_UNSPEC`, `AF_UNIX` or an
//! unspecified transport — decodes to `source: None`: the socket's peer
//! address stands. v2 TLVs are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v1 line starts with this.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (spec §2.1).
pub const V1_MAX_LEN: usize = 107;
/// The shortest v1 line: `PROXY UNKNOWN\r\n`. No header is shorter (v2's
/// fixed part is 16 bytes), so this many bytes can always be read first.
pub const MIN_HEADER_LEN: usize = 15;
/// The v2 signature (spec §2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, length.
pub const V2_FIXED_LEN: usize = 16;
/// The largest v2 header accepted, fixed part, addresses and TLVs
/// included. The length field allows 64 KiB; balancers send a few hundred
/// bytes at most.
pub const V2_MAX_LEN: usize = 4096;

/// v2 version (high nibble of byte 12).
const V2_VERSION: u8 = 0x2;
/// v2 commands (low nibble of byte 12).
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
/// v2 address families (high nibble of byte 13).
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
/// v2 transport protocols (low nibble of byte 13).
const PROTO_UNSPEC: u8 = 0x0;
const PROTO_STREAM: u8 = 0x1;
const PROTO_DGRAM: u8 = 0x2;
/// Address block sizes per family.
const INET_ADDR_LEN: usize = 12;
const INET6_ADDR_LEN: usize = 36;
const UNIX_ADDR_LEN: usize = 216;

/// What the bytes read so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole header yet: read at least `at_least` more bytes (never
    /// more than the header still has, if it is a valid one).
    NeedMore { at_least: usize },
    /// A whole header of `consumed` bytes; `source` is the client's
    /// address, `None` to keep the socket's peer address.
    Done {
        source: Option<SocketAddr>,
        consumed: usize,
    },
}

/// Why the bytes are not a PROXY header. The connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol signature")]
    NoSignature,
    #[error("PROXY v1 line longer than {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 version {0} (only 2 exists)")]
    V2Version(u8),
    #[error("PROXY v2 command {0} (LOCAL or PROXY)")]
    V2Command(u8),
    #[error("PROXY v2 address family/protocol byte {0:#04x}")]
    V2Family(u8),
    #[error("PROXY v2 header of {0} bytes is over the {V2_MAX_LEN}-byte limit")]
    V2TooLong(usize),
    #[error("PROXY v2 address block of {0} bytes is too short for its family")]
    V2AddressTooShort(usize),
}

/// Decode the PROXY header at the start of `buf` (the bytes read so far).
pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyError> {
    match buf.first() {
        None => Ok(Decoded::NeedMore {
            at_least: MIN_HEADER_LEN,
        }),
        Some(b'P') => decode_v1(buf),
        Some(b'\r') => decode_v2(buf),
        Some(_) => Err(ProxyError::NoSignature),
    }
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or
/// `PROXY UNKNOWN[ anything]\r\n`.
fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ProxyError::NoSignature);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ProxyError::V1TooLong);
        }
        return Ok(Decoded::NeedMore {
            at_least: MIN_HEADER_LEN.saturating_sub(buf.len()).max(1),
        });
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ProxyError::V1Malformed("line does not end with CRLF"));
    }
    let line =
        std::str::from_utf8(&window[..lf - 1]).map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    if !line.is_ascii() {
        return Err(ProxyError::V1Malformed("not ASCII"));
    }
    let consumed = lf + 1;
    let mut fields = line.split(' ');
    // The prefix was checked above.
    let _proxy = fields.next();
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored (spec §2.1).
        return Ok(Decoded::Done {
            source: None,
            consumed,
        });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1Malformed(
            "expected source, destination and two ports",
        ));
    };
    let src = v1_address(src, v6)?;
    v1_address(dst, v6)?;
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Decoded::Done {
        source: Some(SocketAddr::new(src, sport)),
        consumed,
    })
}

fn v1_address(text: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    let parsed = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    parsed.map_err(|_| ProxyError::V1Malformed("bad address for its protocol"))
}

/// A decimal port, 1 to 5 digits (no sign), 0..=65535.
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let port = if digits {
        text.parse::<u16>().ok()
    } else {
        None
    };
    port.ok_or(ProxyError::V1Malformed("bad port"))
}

/// Signature, version/command, family/protocol, length, addresses, TLVs.
fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::NoSignature);
    }
    // Refuse a bad version or command as soon as its byte is in.
    let command = match buf.get(12) {
        Some(&b) => {
            if b >> 4 != V2_VERSION {
                return Err(ProxyError::V2Version(b >> 4));
            }
            match b & 0x0f {
                c @ (CMD_LOCAL | CMD_PROXY) => c,
                c => return Err(ProxyError::V2Command(c)),
            }
        }
        None => CMD_LOCAL,
    };
    let Some(&[family, hi, lo]) = buf.get(13..V2_FIXED_LEN) else {
        return Ok(Decoded::NeedMore {
            at_least: V2_FIXED_LEN - buf.len(),
        });
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + body_len;
    if total > V2_MAX_LEN {
        return Err(ProxyError::V2TooLong(total));
    }
    let Some(body) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Decoded::NeedMore {
            at_least: total - buf.len(),
        });
    };
    let (af, proto) = (family >> 4, family & 0x0f);
    let needed = match af {
        AF_UNSPEC => 0,
        AF_INET => INET_ADDR_LEN,
        AF_INET6 => INET6_ADDR_LEN,
        AF_UNIX => UNIX_ADDR_LEN,
        _ => return Err(ProxyError::V2Family(family)),
    };
    if !matches!(proto, PROTO_UNSPEC | PROTO_STREAM | PROTO_DGRAM) {
        return Err(ProxyError::V2Family(family));
    }
    if command == CMD_LOCAL {
        // The balancer's own connection (health check): addresses, if any,
        // are to be ignored (spec §2.2).
        return Ok(Decoded::Done {
            source: None,
            consumed: total,
        });
    }
    if proto == PROTO_DGRAM {
        // A datagram flow cannot arrive on a TCP listener.
        return Err(ProxyError::V2Family(family));
    }
    if body.len() < needed {
        return Err(ProxyError::V2AddressTooShort(body.len()));
    }
    let source = match (af, proto) {
        (AF_INET, PROTO_STREAM) => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (AF_INET6, PROTO_STREAM) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        // AF_UNSPEC, AF_UNIX or an unspecified transport: no IP address to
        // use, keep the socket's (spec §2.2: the receiver may accept it).
        _ => None,
    };
    Ok(Decoded::Done {
        source,
        consumed: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Option<SocketAddr>, usize) {
        match decode(buf) {
            Ok(Decoded::Done { source, consumed }) => (source, consumed),
            other => panic!("expected a whole header, got {other:?}"),
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// Every proper prefix of a header needs more bytes, and reading the
    /// amount asked for never goes past its end.
    fn check_prefixes(header: &[u8]) {
        for cut in 0..header.len() {
            match decode(&header[..cut]) {
                Ok(Decoded::NeedMore { at_least }) => assert!(
                    cut + at_least <= header.len(),
                    "asked for {at_least} more at {cut} of {}",
                    header.len()
                ),
                other => panic!("prefix of {cut} bytes: {other:?}"),
            }
        }
    }

    const V1_TCP4: &[u8] = b"PROXY TCP4 10.0.0.7 192.168.1.1 56324 443\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8100\r\n";
    const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
    const V1_UNKNOWN_WITH_ADDRS: &[u8] = b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n";

    /// v2 PROXY TCP4 10.0.0.9:1234 → 127.0.0.1:8100.
    const V2_TCP4: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21, 0x11, 0x00, 0x0c, // v2 PROXY, INET STREAM, 12 bytes
        10, 0, 0, 9, 127, 0, 0, 1, // src, dst
        0x04, 0xd2, 0x1f, 0xa4, // 1234, 8100
    ];

    /// v2 PROXY TCP6 [2001:db8::5]:443 → [::1]:8100.
    fn v2_tcp6() -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        h.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        h.extend_from_slice(&[0x01, 0xbb, 0x1f, 0xa4]);
        h
    }

    /// v2 LOCAL, AF_UNSPEC, no addresses (a balancer's health check).
    const V2_LOCAL: [u8; 16] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00,
        0x00,
    ];

    /// V2_TCP4 with two TLVs after the addresses (ALPN "h2", AUTHORITY
    /// "example.com"), counted in the length.
    fn v2_tcp4_with_tlvs() -> Vec<u8> {
        let mut h = V2_TCP4.to_vec();
        let tlvs: &[u8] = b"\x01\x00\x02h2\x02\x00\x0bexample.com";
        h[14..16].copy_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        assert_eq!(done(V1_TCP4), (addr("10.0.0.7:56324"), V1_TCP4.len()));
        assert_eq!(done(V1_TCP6), (addr("[2001:db8::1]:4000"), V1_TCP6.len()));
        assert_eq!(done(V1_UNKNOWN), (None, 15));
        assert_eq!(
            done(V1_UNKNOWN_WITH_ADDRS),
            (None, V1_UNKNOWN_WITH_ADDRS.len())
        );
        for h in [V1_TCP4, V1_TCP6, V1_UNKNOWN, V1_UNKNOWN_WITH_ADDRS] {
            check_prefixes(h);
        }
    }

    #[test]
    fn the_stream_after_the_header_is_left_alone() {
        let mut wire = V1_TCP4.to_vec();
        wire.extend_from_slice(b"\x10\x0e\x00\x04MQTT");
        assert_eq!(done(&wire), (addr("10.0.0.7:56324"), V1_TCP4.len()));
        let mut wire = V2_TCP4.to_vec();
        wire.extend_from_slice(b"PROXY TCP4 ...");
        assert_eq!(done(&wire), (addr("10.0.0.9:1234"), V2_TCP4.len()));
    }

    #[test]
    fn v1_longest_line_is_accepted_and_longer_refused() {
        // UNKNOWN with padding to exactly 107 bytes.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(done(&line), (None, V1_MAX_LEN));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'x');
        assert_eq!(decode(&long), Err(ProxyError::V1TooLong));
        long.extend_from_slice(b"\r\n");
        assert_eq!(decode(&long), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for bad in [
            &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        ] {
            assert!(
                matches!(decode(bad), Err(ProxyError::V1Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                decode(bad)
            );
        }
    }

    #[test]
    fn v2_tcp4_tcp6_local_and_tlvs() {
        assert_eq!(done(&V2_TCP4), (addr("10.0.0.9:1234"), 28));
        let tcp6 = v2_tcp6();
        assert_eq!(done(&tcp6), (addr("[2001:db8::5]:443"), 52));
        assert_eq!(done(&V2_LOCAL), (None, 16));
        let tlvs = v2_tcp4_with_tlvs();
        assert_eq!(done(&tlvs), (addr("10.0.0.9:1234"), tlvs.len()));
        // LOCAL with addresses: they are ignored.
        let mut local = V2_TCP4;
        local[12] = 0x20;
        assert_eq!(done(&local), (None, 28));
        // AF_UNSPEC and AF_UNIX under PROXY: no address, the peer stands.
        let mut unspec = V2_LOCAL;
        unspec[12] = 0x21;
        assert_eq!(done(&unspec), (None, 16));
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 0xd8]);
        unix.resize(16 + 216, 0);
        assert_eq!(done(&unix), (None, 232));
        for h in [V2_TCP4.to_vec(), tcp6, V2_LOCAL.to_vec(), tlvs, unix] {
            check_prefixes(&h);
        }
    }

    #[test]
    fn v2_truncated_needs_exactly_the_rest() {
        assert_eq!(
            decode(&V2_TCP4[..20]),
            Ok(Decoded::NeedMore { at_least: 8 })
        );
        assert_eq!(
            decode(&V2_TCP4[..5]),
            Ok(Decoded::NeedMore { at_least: 11 })
        );
        assert_eq!(
            decode(&V1_TCP4[..20]),
            Ok(Decoded::NeedMore { at_least: 1 })
        );
        assert_eq!(decode(&[]), Ok(Decoded::NeedMore { at_least: 15 }));
    }

    #[test]
    fn bad_signatures_versions_commands_and_families_are_refused() {
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NoSignature));
        assert_eq!(
            decode(b"\x10\x0e\x00\x04MQTT"),
            Err(ProxyError::NoSignature)
        );
        assert_eq!(decode(b"PROXZ"), Err(ProxyError::NoSignature));
        assert_eq!(decode(b"PR"), Ok(Decoded::NeedMore { at_least: 13 }));
        assert_eq!(decode(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyError::NoSignature));
        assert_eq!(
            decode(b"\r\n\r\n\0\r"),
            Ok(Decoded::NeedMore { at_least: 10 })
        );
        let mut v = V2_TCP4;
        v[12] = 0x11;
        assert_eq!(decode(&v[..13]), Err(ProxyError::V2Version(1)));
        v[12] = 0x22;
        assert_eq!(decode(&v), Err(ProxyError::V2Command(2)));
        for family in [0x41, 0x13, 0x12] {
            let mut v = V2_TCP4;
            v[13] = family;
            assert_eq!(decode(&v), Err(ProxyError::V2Family(family)));
        }
        let mut short = V2_TCP4;
        short[15] = 11;
        assert_eq!(decode(&short[..27]), Err(ProxyError::V2AddressTooShort(11)));
    }

    #[test]
    fn v2_oversize_is_refused_from_the_length_field() {
        let mut v = V2_TCP4;
        v[14..16].copy_from_slice(&((V2_MAX_LEN - 16 + 1) as u16).to_be_bytes());
        assert_eq!(decode(&v[..16]), Err(ProxyError::V2TooLong(V2_MAX_LEN + 1)));
        v[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&v[..16]), Err(ProxyError::V2TooLong(16 + 65535)));
        // The largest allowed one is fine.
        let mut max = V2_TCP4.to_vec();
        max[14..16].copy_from_slice(&((V2_MAX_LEN - 16) as u16).to_be_bytes());
        max.resize(V2_MAX_LEN, 0);
        assert_eq!(done(&max), (addr("10.0.0.9:1234"), V2_MAX_LEN));
    }
}
