//! Golden fixtures for the XMPP framer (`codecs/fixtures/xmpp`): each
//! `NAME.xml` holds stanzas as a client would send them inside an open
//! stream; `NAME.tree` is the expected tree dump. Every fixture is also
//! fed split at every byte offset (and one byte at a time), which must
//! give the same stanzas. `UPDATE_FIXTURES=1` rewrites the `.tree` files.

use std::path::PathBuf;

use bytes::BytesMut;
use imgate_codecs::xmpp::{Element, Node, XmppEvent, XmppFramer};
use tokio_util::codec::Decoder;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/xmpp")
}

fn dump(e: &Element, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    out.push_str(&format!("{pad}{{{}}}{}", e.ns, e.name));
    for (k, v) in &e.attrs {
        out.push_str(&format!(" {k}={v:?}"));
    }
    out.push('\n');
    for c in &e.children {
        match c {
            Node::Element(child) => dump(child, depth + 1, out),
            Node::Text(t) => out.push_str(&format!("{pad}  text {t:?}\n")),
        }
    }
}

/// Feed `chunks` to a fresh framer; the stanzas found (header skipped).
fn stanzas(chunks: &[&[u8]]) -> Vec<Element> {
    let mut framer = XmppFramer::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(ev) = framer.decode(&mut buf).expect("fixture decodes") {
            match ev {
                XmppEvent::Stanza(e) => out.push(e),
                XmppEvent::StreamOpen(_) => {}
                XmppEvent::StreamClose => panic!("unexpected close"),
            }
        }
    }
    out
}

#[test]
fn fixtures_decode_to_their_trees_at_every_split() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "fixtures present");
    for path in names {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let stream = format!("{HEADER}{text}");
        let bytes = stream.as_bytes();
        let whole = stanzas(&[bytes]);
        let mut tree = String::new();
        for e in &whole {
            dump(e, 0, &mut tree);
        }
        let tree_path = path.with_extension("tree");
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&tree_path, &tree).expect("write tree");
        }
        let expected = std::fs::read_to_string(&tree_path)
            .unwrap_or_else(|_| panic!("{} missing (UPDATE_FIXTURES=1)", tree_path.display()));
        assert_eq!(tree, expected, "{}", path.display());
        for at in 0..=bytes.len() {
            assert_eq!(
                stanzas(&[&bytes[..at], &bytes[at..]]),
                whole,
                "{} split at {at}",
                path.display()
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(stanzas(&singles), whole, "{} byte by byte", path.display());
        // What the serializer writes parses back to the same trees.
        let rewritten: String = whole.iter().map(Element::to_xml).collect();
        assert_eq!(stanzas(&[format!("{HEADER}{rewritten}").as_bytes()]), whole);
    }
}
