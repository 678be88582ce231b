//! [`Packet`] → bytes for a protocol version. The inverse of
//! [`super::decode`]: a decoded packet re-encodes to the same bytes when
//! its optional MQTT 5 fields were written in their shortest form (which
//! is what this encoder writes).

use bytes::{BufMut, BytesMut};

use super::packet::*;
use super::wire;

fn fixed_header(out: &mut BytesMut, first: u8, body: &BytesMut) {
    out.put_u8(first);
    wire::put_varint(out, body.len());
    out.put_slice(body);
}

/// Append the encoding of `packet` to `out`.
pub fn encode_packet(packet: &Packet, version: Version, out: &mut BytesMut) {
    let v5 = version == Version::V5;
    let mut b = BytesMut::new();
    let first = match packet {
        Packet::Connect(c) => {
            let v5 = c.version == Version::V5;
            wire::put_string(&mut b, "MQTT");
            b.put_u8(c.version.level());
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | (w.qos.as_u8() << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            b.put_u8(flags);
            b.put_u16(c.keep_alive);
            if v5 {
                c.properties.encode(&mut b);
            }
            wire::put_string(&mut b, &c.client_id);
            if let Some(w) = &c.will {
                if v5 {
                    w.properties.encode(&mut b);
                }
                wire::put_string(&mut b, &w.topic);
                wire::put_binary(&mut b, &w.payload);
            }
            if let Some(u) = &c.username {
                wire::put_string(&mut b, u);
            }
            if let Some(p) = &c.password {
                wire::put_binary(&mut b, p);
            }
            0x10
        }
        Packet::ConnAck(a) => {
            b.put_u8(u8::from(a.session_present));
            b.put_u8(a.code);
            if v5 {
                a.properties.encode(&mut b);
            }
            0x20
        }
        Packet::Publish(p) => {
            wire::put_string(&mut b, &p.topic);
            if p.qos != QoS::AtMostOnce {
                b.put_u16(p.pkid);
            }
            if v5 {
                p.properties.encode(&mut b);
            }
            b.put_slice(&p.payload);
            0x30 | (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain)
        }
        Packet::PubResp(r) => {
            b.put_u16(r.pkid);
            if v5 {
                reason_and_props(&mut b, r.reason, &r.properties);
            }
            match r.kind {
                PubRespKind::PubAck => 0x40,
                PubRespKind::PubRec => 0x50,
                PubRespKind::PubRel => 0x62,
                PubRespKind::PubComp => 0x70,
            }
        }
        Packet::Subscribe(s) => {
            b.put_u16(s.pkid);
            if v5 {
                s.properties.encode(&mut b);
            }
            for f in &s.filters {
                wire::put_string(&mut b, &f.filter);
                let o = &f.options;
                let mut byte = o.qos.as_u8();
                if v5 {
                    byte |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling & 3) << 4;
                }
                b.put_u8(byte);
            }
            0x82
        }
        Packet::SubAck(s) => {
            b.put_u16(s.pkid);
            if v5 {
                s.properties.encode(&mut b);
            }
            b.put_slice(&s.reasons);
            0x90
        }
        Packet::Unsubscribe(u) => {
            b.put_u16(u.pkid);
            if v5 {
                u.properties.encode(&mut b);
            }
            for f in &u.filters {
                wire::put_string(&mut b, f);
            }
            0xa2
        }
        Packet::UnsubAck(u) => {
            b.put_u16(u.pkid);
            if v5 {
                u.properties.encode(&mut b);
                b.put_slice(&u.reasons);
            }
            0xb0
        }
        Packet::PingReq => 0xc0,
        Packet::PingResp => 0xd0,
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_props(&mut b, d.reason, &d.properties);
            }
            0xe0
        }
        Packet::Auth(a) => {
            reason_and_props(&mut b, a.reason, &a.properties);
            0xf0
        }
    };
    fixed_header(out, first, &b);
}

/// Shortest form: nothing for success without properties, the reason
/// alone without properties.
fn reason_and_props(b: &mut BytesMut, reason: u8, props: &super::Properties) {
    if reason == 0 && props.is_empty() {
        return;
    }
    b.put_u8(reason);
    if !props.is_empty() {
        props.encode(b);
    }
}
