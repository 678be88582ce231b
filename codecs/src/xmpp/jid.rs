//! [`Jid`]: `local@domain/resource` addresses (RFC 7622), parsed without
//! stringprep: imgate user ids are used as local parts as they are.

use std::fmt;

/// A parsed JID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    pub local: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

impl Jid {
    /// Parse `[local@]domain[/resource]`; None if a part is empty.
    pub fn parse(s: &str) -> Option<Jid> {
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, bare),
        };
        if domain.is_empty()
            || local.is_some_and(str::is_empty)
            || resource.is_some_and(str::is_empty)
            || domain.contains('@')
        {
            return None;
        }
        Some(Jid {
            local: local.map(str::to_string),
            domain: domain.to_ascii_lowercase(),
            resource: resource.map(str::to_string),
        })
    }

    /// `local@domain` (or just the domain).
    pub fn bare(&self) -> String {
        match &self.local {
            Some(l) => format!("{l}@{}", self.domain),
            None => self.domain.clone(),
        }
    }

    /// `local@domain/resource`.
    pub fn full(local: &str, domain: &str, resource: &str) -> String {
        format!("{local}@{domain}/{resource}")
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bare())?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_parts() {
        let j = Jid::parse("alice@Localhost/phone/x").unwrap();
        assert_eq!(j.local.as_deref(), Some("alice"));
        assert_eq!(j.domain, "localhost");
        assert_eq!(j.resource.as_deref(), Some("phone/x"));
        assert_eq!(j.to_string(), "alice@localhost/phone/x");
        assert_eq!(Jid::parse("localhost").unwrap().bare(), "localhost");
        assert!(Jid::parse("@x").is_none());
        assert!(Jid::parse("a@").is_none());
        assert!(Jid::parse("a@b/").is_none());
    }
}
