//! DESIGN §4 codes rendered the XMPP way: stanza errors (RFC 6120 §8.3)
//! whose `<text>` starts with the numeric code, e.g. `242 sensitive word`.

use imgate_codecs::xmpp::{ns, Element};
use imgate_core::{ErrorCode, ImError};

/// The stanza error condition and type for a contract code.
pub fn condition_of(code: ErrorCode) -> (&'static str, &'static str) {
    match code {
        ErrorCode::SensitiveWord => ("policy-violation", "modify"),
        ErrorCode::OverFrequency => ("resource-constraint", "wait"),
        ErrorCode::TokenError
        | ErrorCode::AuthFailure
        | ErrorCode::UserForbidden
        | ErrorCode::UserBlocked
        | ErrorCode::KickedOff => ("not-authorized", "auth"),
        ErrorCode::NotInGroup | ErrorCode::NoRight => ("forbidden", "auth"),
        ErrorCode::NotExist => ("item-not-found", "cancel"),
        ErrorCode::NotImplemented => ("feature-not-implemented", "cancel"),
        ErrorCode::ServerError | ErrorCode::Timeout => ("internal-server-error", "wait"),
        ErrorCode::InvalidData
        | ErrorCode::InvalidMessage
        | ErrorCode::InvalidParameter
        | ErrorCode::ApiNotSigned
        | ErrorCode::SignExpired
        | ErrorCode::Success => ("bad-request", "modify"),
    }
}

/// `<error type=…><condition/><text>code message</text></error>`.
pub fn error_element(e: &ImError) -> Element {
    let (condition, kind) = condition_of(e.code);
    condition_element(
        condition,
        kind,
        &format!("{} {}", e.code.as_i32(), e.message),
    )
}

/// An `<error>` with an explicit condition (for protocol-level refusals).
pub fn condition_element(condition: &str, kind: &str, text: &str) -> Element {
    Element::new("error", ns::CLIENT)
        .attr("type", kind)
        .child(Element::new(condition, ns::STANZA_ERRORS))
        .child(Element::new("text", ns::STANZA_ERRORS).text(text))
}

/// The error reply to `stanza` (same element name and id, `type='error'`,
/// addressed back to `own_jid`).
pub fn error_reply(stanza: &Element, own_jid: &str, error: Element) -> Element {
    let mut reply = Element::new(stanza.name.clone(), ns::CLIENT)
        .attr("type", "error")
        .attr("to", own_jid);
    if let Some(id) = stanza.get_attr("id") {
        reply = reply.attr("id", id);
    }
    if let Some(to) = stanza.get_attr("to") {
        reply = reply.attr("from", to);
    }
    reply.child(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_codes_map_to_the_design_conditions() {
        assert_eq!(condition_of(ErrorCode::SensitiveWord).0, "policy-violation");
        assert_eq!(
            condition_of(ErrorCode::OverFrequency).0,
            "resource-constraint"
        );
        assert_eq!(condition_of(ErrorCode::NotInGroup).0, "forbidden");
        assert_eq!(condition_of(ErrorCode::NoRight).0, "forbidden");
        assert_eq!(condition_of(ErrorCode::NotExist).0, "item-not-found");
        assert_eq!(condition_of(ErrorCode::InvalidParameter).0, "bad-request");
        let el = error_element(&ImError::new(ErrorCode::SensitiveWord, "matched"));
        assert!(el.to_xml().contains(">242 matched</text>"));
    }
}
