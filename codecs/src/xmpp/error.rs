//! `XmppCodecError`: what can go wrong between XMPP bytes and stanza trees,
//! and which RFC 6120 §4.9.3 stream error condition the peer is told.
//!
//! Every framing error is fatal for the stream: XMPP has no way to skip a
//! broken stanza, so the session sends `<stream:error>` with
//! [`XmppCodecError::stream_condition`] and closes (`can_continue` is false).

/// An error of the XMPP framer or stanza parser.
#[derive(Debug, thiserror::Error)]
pub enum XmppCodecError {
    /// The bytes are not well-formed XML (unclosed or mismatched tags, bad
    /// attribute syntax, text outside a stanza, an unknown entity).
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    /// A construct RFC 6120 §11.1 forbids: DTDs, comments, processing
    /// instructions, entity declarations.
    #[error("restricted XML: {0} is not allowed in an XMPP stream")]
    RestrictedXml(&'static str),
    /// A stanza (or the stream header) exceeds the size limit.
    #[error("stanza exceeds the limit of {max} bytes")]
    StanzaTooLarge { max: usize },
    /// Elements nested deeper than the limit.
    #[error("elements nested deeper than {max} levels")]
    TooDeep { max: usize },
    /// An element with more attributes than the limit.
    #[error("an element has more than {max} attributes")]
    TooManyAttributes { max: usize },
    /// A stanza with more elements than the limit.
    #[error("a stanza has more than {max} elements")]
    TooManyElements { max: usize },
    /// The bytes of a stanza are not UTF-8.
    #[error("stanza is not valid UTF-8")]
    InvalidUtf8,
    /// The stream header is not `<stream:stream>` of the right namespaces.
    #[error("bad stream header: {0}")]
    BadStreamHeader(String),
    /// The stream's default namespace is not `jabber:client`.
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    /// The transport failed (tokio-util's `Decoder` requires this variant).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl XmppCodecError {
    /// Whether the stream can go on after this error: never, for XMPP.
    pub fn can_continue(&self) -> bool {
        false
    }

    /// The stream error condition element name (RFC 6120 §4.9.3).
    pub fn stream_condition(&self) -> &'static str {
        match self {
            XmppCodecError::NotWellFormed(_) | XmppCodecError::InvalidUtf8 => "not-well-formed",
            XmppCodecError::RestrictedXml(_) => "restricted-xml",
            XmppCodecError::StanzaTooLarge { .. }
            | XmppCodecError::TooDeep { .. }
            | XmppCodecError::TooManyAttributes { .. }
            | XmppCodecError::TooManyElements { .. } => "policy-violation",
            XmppCodecError::BadStreamHeader(_) => "bad-format",
            XmppCodecError::InvalidNamespace(_) => "invalid-namespace",
            XmppCodecError::Io(_) => "internal-server-error",
        }
    }
}
