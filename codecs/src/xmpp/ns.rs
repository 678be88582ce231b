//! XML namespaces of the XMPP subset imgate speaks (RFC 6120/6121 and the
//! XEPs listed in DESIGN §5.4), as named constants.

/// The default namespace of client-to-server stanzas (RFC 6120 §4.8.3).
pub const CLIENT: &str = "jabber:client";
/// The `stream:` prefix namespace (RFC 6120 §4.8.2).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// XMPP over WebSocket framing (RFC 7395): `<open/>` and `<close/>`.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza error conditions (RFC 6120 §8.3.3).
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// SASL negotiation (RFC 6120 §6).
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// STARTTLS negotiation (RFC 6120 §5).
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// Resource binding (RFC 6120 §7).
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// The legacy session establishment element (RFC 3921, optional in RFC 6121).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// The `xml:` prefix namespace (always bound).
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Roster (RFC 6121 §2).
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0030 service discovery.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030 service discovery (items).
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199 XMPP ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0184 message delivery receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0198 stream management (version 3).
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0313 message archive management (version 2).
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0059 result set management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0004 data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0297 stanza forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0203 delayed delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0359 unique and stable stanza ids.
pub const STANZA_ID: &str = "urn:xmpp:sid:0";
/// XEP-0280 message carbons (used to show a user's own messages sent from
/// another device).
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// imgate's own element carrying every `MessagePayload` field that
/// `<body>` cannot (DESIGN §5.4).
pub const IMGATE_PAYLOAD: &str = "urn:imgate:payload";
/// XEP-0085 chat state notifications.
pub const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0333 displayed markers.
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0444 message reactions.
pub const REACTIONS: &str = "urn:xmpp:reactions:0";
/// XEP-0308 last message correction.
pub const CORRECTION: &str = "urn:xmpp:message-correct:0";
/// XEP-0424 message retraction (version 1).
pub const RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0428 fallback indication.
pub const FALLBACK: &str = "urn:xmpp:fallback:0";
/// XEP-0334 message processing hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0045 multi-user chat (the join element).
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 multi-user chat (occupant information).
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0191 blocking command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0313 archive results (inside a message).
pub const MAM_RESULT: &str = MAM;
