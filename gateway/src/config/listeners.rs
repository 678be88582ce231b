//! The listener table (DESIGN §5.6): every listener the gateway can open,
//! one row each — its name (the `listening <name> <addr>` startup line,
//! the `IMGATE_<NAME>_ADDR` override, the `proxy_protocol` and metrics
//! label), the service it runs, and its transport.
//!
//! Startup, admission caps, metrics and shutdown are driven by this table
//! (`server.rs` binds every row whose address is set; `sessions::listener`
//! runs the one accept loop for all of them). A new protocol is one codec
//! module, one [`Service`] variant with its handler, and one row here
//! (plus its `<name>_addr` setting in `config.rs`).
//!
//! Transports are independent of the service: the same PB, MQTT or XMPP
//! session runs over TCP, TLS, WebSocket and WebSocket over TLS. TLS rows
//! open only when a certificate is configured (`tls_cert`/`tls_key`); then
//! plain and TLS listeners of a protocol run side by side.

use imgate_core::pipeline::Protocol;

use super::Config;

/// What runs on a listener once a connection is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Pb,
    Mqtt,
    Xmpp,
    /// The client HTTP API (`/v1/...`).
    Http,
    /// The signed admin API and `/metrics`.
    Admin,
    /// One WebSocket listener for every protocol, chosen by path:
    /// `/mqtt`, `/xmpp-websocket`, `/pb` (`crate::websocket`).
    WebSocket,
}

impl Service {
    /// The protocol of the sessions this service runs (`None` for the
    /// WebSocket listener: the path decides).
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Service::Pb => Some(Protocol::Pb),
            Service::Mqtt => Some(Protocol::Mqtt),
            Service::Xmpp => Some(Protocol::Xmpp),
            Service::Http => Some(Protocol::Http),
            Service::Admin => Some(Protocol::Admin),
            Service::WebSocket => None,
        }
    }
}

/// How bytes reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (XMPP's plain listener offers STARTTLS).
    Tcp,
    /// TLS from the first byte (implicit TLS; XEP-0368 direct TLS for XMPP).
    Tls,
}

/// One row of the table.
#[derive(Debug)]
pub struct ListenerSpec {
    /// `pb`, `mqtts`, `ws`, ...
    pub name: &'static str,
    pub service: Service,
    pub transport: Transport,
    /// Its address setting (`<name>_addr`); empty disables the listener.
    pub addr: fn(&Config) -> &str,
    /// The per-IP connection rate and open cap apply (not on the admin
    /// API: an operator is never locked out by a flood from one address).
    pub per_ip_limits: bool,
}

impl ListenerSpec {
    /// Whether connections start with a TLS handshake here, given whether
    /// a certificate is configured.
    pub fn tls(&self, config: &Config, have_cert: bool) -> bool {
        have_cert
            && match (self.transport, self.service) {
                (Transport::Tls, _) => true,
                // The admin API is HTTPS unless `admin_tls = false`.
                (Transport::Tcp, Service::Admin) => config.admin_tls,
                (Transport::Tcp, _) => false,
            }
    }

    /// Whether this listener opens: its address is set, and a TLS row
    /// needs a certificate.
    pub fn enabled(&self, config: &Config, have_cert: bool) -> bool {
        !(self.addr)(config).trim().is_empty() && (self.transport == Transport::Tcp || have_cert)
    }
}

const fn row(
    name: &'static str,
    service: Service,
    transport: Transport,
    addr: fn(&Config) -> &str,
) -> ListenerSpec {
    ListenerSpec {
        name,
        service,
        transport,
        addr,
        per_ip_limits: !matches!(service, Service::Admin),
    }
}

/// Every listener, in the order of the startup lines.
pub static LISTENERS: [ListenerSpec; 11] = [
    row("pb", Service::Pb, Transport::Tcp, |c| &c.pb_addr),
    row("mqtt", Service::Mqtt, Transport::Tcp, |c| &c.mqtt_addr),
    row("xmpp", Service::Xmpp, Transport::Tcp, |c| &c.xmpp_addr),
    row("http", Service::Http, Transport::Tcp, |c| &c.http_addr),
    row("admin", Service::Admin, Transport::Tcp, |c| &c.admin_addr),
    row("ws", Service::WebSocket, Transport::Tcp, |c| &c.ws_addr),
    row("pbs", Service::Pb, Transport::Tls, |c| &c.pbs_addr),
    row("mqtts", Service::Mqtt, Transport::Tls, |c| &c.mqtts_addr),
    row("xmpps", Service::Xmpp, Transport::Tls, |c| &c.xmpps_addr),
    row("https", Service::Http, Transport::Tls, |c| &c.https_addr),
    row("wss", Service::WebSocket, Transport::Tls, |c| &c.wss_addr),
];

/// The row called `name`.
pub fn by_name(name: &str) -> Option<&'static ListenerSpec> {
    LISTENERS.iter().find(|l| l.name == name)
}

/// The names of the listeners, for messages.
pub fn names() -> String {
    LISTENERS
        .iter()
        .map(|l| l.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_row_has_a_default_address() {
        let c = Config::default();
        for (i, l) in LISTENERS.iter().enumerate() {
            assert!(
                LISTENERS[i + 1..].iter().all(|o| o.name != l.name),
                "{} twice",
                l.name
            );
            assert!(
                !(l.addr)(&c).is_empty(),
                "{} has no default address",
                l.name
            );
        }
        assert_eq!(by_name("mqtts").map(|l| l.service), Some(Service::Mqtt));
    }

    #[test]
    fn tls_rows_open_only_with_a_certificate_and_plain_rows_stay_plain() {
        let c = Config::default();
        let mqtts = by_name("mqtts").unwrap();
        let mqtt = by_name("mqtt").unwrap();
        assert!(!mqtts.enabled(&c, false));
        assert!(mqtts.enabled(&c, true) && mqtts.tls(&c, true));
        assert!(mqtt.enabled(&c, true) && !mqtt.tls(&c, true));
        let admin = by_name("admin").unwrap();
        assert!(admin.tls(&c, true) && !admin.tls(&c, false));
        let off = Config {
            admin_tls: false,
            ws_addr: String::new(),
            ..Config::default()
        };
        assert!(!admin.tls(&off, true));
        assert!(!by_name("ws").unwrap().enabled(&off, false));
    }
}
