//! XMPP-lite (DESIGN §5.4): the client-to-server subset of RFC 6120/6121
//! imgate speaks, as pure code — bytes ↔ stanza trees ↔ the core model.
//!
//! Layers, bytes at the top and the core model at the bottom:
//! - [`framer`]: [`XmppFramer`], a tokio-util `Decoder` finding the stream
//!   header, then one complete stanza at a time ([`XmppEvent`]) in a byte
//!   buffer that may end anywhere; size and depth bounded; DTDs, entities,
//!   comments and processing instructions refused.
//! - [`tree`]: quick-xml over one delimited stanza → [`Element`].
//! - [`element`]: the namespace-resolved element tree and its serializer.
//! - [`jid`]: `local@domain/resource` addresses.
//! - [`payload`]: `<payload xmlns='urn:imgate:payload'>` ↔ the
//!   `MessagePayload` fields `<body>` cannot carry.
//! - [`extensions`]: what a `<message>`'s extension elements mean (chat
//!   states, markers, reactions, corrections, retraction) and how the
//!   others travel in the payload's `extra`.
//! - [`normalizer`]: [`XmppNormalizer`], `<message>` ↔ `Draft`/`Message`.
//! - [`timestamp`]: XEP-0082 date-times for `<delay>` and MAM filters.
//! - [`ns`]: the namespaces, as constants.
//! - [`error`]: [`XmppCodecError`] with its RFC 6120 stream condition.
//!
//! ```
//! use bytes::BytesMut;
//! use imgate_codecs::xmpp::{XmppEvent, XmppFramer, XmppNormalizer};
//! use tokio_util::codec::Decoder;
//!
//! let mut framer = XmppFramer::default();
//! let mut buf = BytesMut::from(
//!     "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
//!      to='localhost' version='1.0'><message to='bob@localhost' type='chat' id='c1'><bo",
//! );
//! assert!(matches!(framer.decode(&mut buf)?, Some(XmppEvent::StreamOpen(_))));
//! assert_eq!(framer.decode(&mut buf)?, None); // the stanza is not complete yet
//! buf.extend_from_slice(b"dy>hi</body></message>");
//! let Some(XmppEvent::Stanza(message)) = framer.decode(&mut buf)? else { unreachable!() };
//! let draft = XmppNormalizer::new("localhost").message_to_draft(&message, "alice").unwrap().unwrap();
//! assert_eq!(draft.payload.searchable_content, "hi");
//! assert_eq!(draft.client_msg_id, "c1");
//! # Ok::<(), imgate_codecs::xmpp::XmppCodecError>(())
//! ```

pub mod element;
pub mod error;
pub mod extensions;
pub mod framer;
pub mod jid;
pub mod normalizer;
pub mod ns;
pub mod payload;
pub mod timestamp;
pub mod tree;

pub use element::{Element, Node};
pub use error::XmppCodecError;
pub use framer::{XmppEvent, XmppFramer, DEFAULT_MAX_DEPTH, DEFAULT_MAX_STANZA};
pub use jid::Jid;
pub use normalizer::{DeliveryOptions, XmppNormalizer};
