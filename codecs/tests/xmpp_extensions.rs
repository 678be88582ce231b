//! Golden fixtures for what client `<message>` extensions become
//! (`codecs/fixtures/xmpp_ext`): each stanza of `NAME.xml` is classified
//! (`extensions::classify`) and, when it is content, normalized to a
//! draft; `NAME.expected` holds one line per stanza. `UPDATE_FIXTURES=1`
//! rewrites the `.expected` files.

use std::path::PathBuf;

use bytes::BytesMut;
use imgate_codecs::xmpp::extensions::{classify, split_extra, Classified};
use imgate_codecs::xmpp::{XmppEvent, XmppFramer, XmppNormalizer};
use tokio_util::codec::Decoder;

const HEADER: &str = "<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/xmpp_ext")
}

fn describe(el: &imgate_codecs::xmpp::Element, n: &XmppNormalizer) -> String {
    let class = classify(el);
    let mut line = format!("{class:?}");
    if let Classified::Content { .. } = class {
        let d = n
            .message_to_draft(el, "alice")
            .expect("draft")
            .expect("content");
        let (rest, carried) = split_extra(&d.payload.extra);
        let names: Vec<String> = carried
            .iter()
            .map(|e| format!("{{{}}}{}", e.ns, e.name))
            .collect();
        line.push_str(&format!(
            " | conv {:?} text {:?} extra-rest {:?} carried {:?}",
            d.conversation, d.payload.searchable_content, rest, names
        ));
    }
    line
}

#[test]
fn client_extensions_classify_and_carry_as_recorded() {
    let n = XmppNormalizer::new("localhost");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for path in names {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let mut buf = BytesMut::from(format!("{HEADER}{text}").as_str());
        let mut framer = XmppFramer::default();
        let mut out = String::new();
        while let Some(ev) = framer.decode(&mut buf).expect("fixture decodes") {
            if let XmppEvent::Stanza(el) = ev {
                out.push_str(&describe(&el, &n));
                out.push('\n');
            }
        }
        let expected_path = path.with_extension("expected");
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&expected_path, &out).expect("write expected");
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} missing (UPDATE_FIXTURES=1)", expected_path.display()));
        assert_eq!(out, expected, "{}", path.display());
    }
}
