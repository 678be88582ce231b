//! `amqps://`: the RabbitMQ store over TLS. The local broker speaks plain
//! AMQP, so the test puts a TLS-terminating proxy (tokio-rustls, the
//! suite's self-signed `localhost` certificate) in front of it: the
//! store's TLS stack, certificate checks and `tls_ca_file` are real.
//!
//! Needs `IMGATE_TEST_AMQP` (a plain `amqp://` URL of a local broker);
//! without it the test says so and passes.

use std::path::PathBuf;
use std::sync::Arc;

use imgate_adapters::rabbit::{delete_topology, RabbitConfig, RabbitStore};
use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::store::NewMessage;
use imgate_core::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance/fixtures/tls")
        .join(name)
}

/// host:port of the plain broker in `url` (`amqp://user:pass@host:port/...`).
fn broker_addr(url: &str) -> String {
    let rest = url.trim_start_matches("amqp://");
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit('@').next().unwrap_or(host);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5672")
    }
}

/// Accept TLS on a free port and pipe each connection to `upstream`.
async fn tls_proxy(upstream: String) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("cert.pem"))
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(fixture("key.pem")).expect("key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return; // a client that does not trust us: fine
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_works_and_an_untrusted_broker_is_refused() {
    let url = match std::env::var("IMGATE_TEST_AMQP") {
        Ok(u) if u.starts_with("amqp://") => u,
        _ => {
            eprintln!(
                "SKIPPED: IMGATE_TEST_AMQP not set (the amqps:// test needs a RabbitMQ broker)"
            );
            return;
        }
    };
    let port = tls_proxy(broker_addr(&url)).await;
    let (user, vhost) = {
        let rest = url.trim_start_matches("amqp://");
        let userinfo = rest.split('@').next().filter(|_| rest.contains('@'));
        let vhost = rest
            .split_once('/')
            .map(|(_, v)| v.split('?').next().unwrap_or(""));
        (
            userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
            vhost.unwrap_or("%2f").to_string(),
        )
    };
    let prefix = format!("t-tls-{}", std::process::id());
    let ca = fixture("cert.pem")
        .display()
        .to_string()
        .replace('/', "%2F");
    let tls_url = format!("amqps://{user}localhost:{port}/{vhost}?prefix={prefix}");
    let dir = tempfile::tempdir().unwrap();

    // Without the CA the broker's certificate is not trusted: no store.
    let config = RabbitConfig::from_url(&tls_url, dir.path(), 1).expect("config");
    assert!(
        RabbitStore::open(config).await.is_err(),
        "a self-signed broker certificate must not be accepted without tls_ca_file"
    );

    let config = RabbitConfig::from_url(&format!("{tls_url}&tls_ca_file={ca}"), dir.path(), 1)
        .expect("config");
    let store = RabbitStore::open(config).await.expect("open over TLS");
    let appended = store
        .append(NewMessage {
            sender: "alice".into(),
            conversation: Conversation::private("bob"),
            payload: MessagePayload::text("over TLS"),
            client_msg_id: "tls-1".into(),
            recipients: vec!["alice".into(), "bob".into()],
            to_users: vec![],
            sender_device: None,
        })
        .await
        .expect("append over TLS");
    let page = store.sync("bob", 0, 10).await.expect("sync");
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].message_id, appended.message.message_id);
    store.close().await;
    delete_topology(&url, &prefix, &[]).await.expect("cleanup");
}
