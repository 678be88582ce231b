//! The event names of `webhook_events` and the check of the webhook
//! settings: configuration, so that `Config::validate` needs nothing
//! above it (the sender is `crate::webhooks`).

use anyhow::bail;

use super::Config;

/// The events a webhook can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Connected,
    Disconnected,
    Delivered,
    Read,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Connected,
        EventKind::Disconnected,
        EventKind::Delivered,
        EventKind::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Delivered => "delivered",
            EventKind::Read => "read",
        }
    }

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The event names of `webhook_events` as a bit set.
pub fn parse_events(list: &str) -> anyhow::Result<u8> {
    let mut bits = 0;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(kind) = EventKind::ALL.iter().find(|k| k.name() == name) else {
            bail!(
                "webhook_events: {name:?} is not an event (connected, disconnected, delivered, read)"
            );
        };
        bits |= kind.bit();
    }
    Ok(bits)
}

/// Check the webhook settings (`Config::validate`).
pub fn validate(config: &Config) -> anyhow::Result<()> {
    parse_events(&config.webhook_events)?;
    let url = config.webhook_url.trim();
    if !url.is_empty() && !url.starts_with("http://") {
        bail!("webhook_url must be an http:// URL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists_are_checked() {
        assert_eq!(parse_events("").unwrap(), 0);
        assert_eq!(
            parse_events(" connected, read ").unwrap(),
            EventKind::Connected.bit() | EventKind::Read.bit()
        );
        let e = parse_events("connected,logout").unwrap_err();
        assert!(e.to_string().contains("logout"), "{e}");
        let mut c = Config {
            webhook_url: "https://x".into(),
            ..Config::default()
        };
        assert!(validate(&c).is_err());
        c.webhook_url = "http://127.0.0.1:9/e".into();
        assert!(validate(&c).is_ok());
    }
}
