//! The routers and docs/openapi.yaml list the same routes (issue 14).
//!
//! axum's `Router` cannot list its routes, so this reads them from the
//! router definitions themselves: every `.route("<path>", <methods>)` in
//! `src/http/*.rs`. A route added to a router but not to the spec (or
//! left in the spec after it was removed) fails here; the conformance
//! test `openapi.rs` checks the other facts against the running server
//! (each spec route answers on its listener, replies match the schemas).

use std::collections::BTreeSet;
use std::path::Path;

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

/// `(METHOD, path)` of every `.route(...)` call in `source`.
fn routes_in_source(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let Some(close) = rest[open + 1..].find('"') else {
            break;
        };
        let path = &rest[open + 1..open + 1 + close];
        // The method routers up to the next route or router call.
        let after = &rest[open + 2 + close..];
        let end = [
            ".route(",
            ".merge(",
            ".fallback(",
            "Router::new()",
            "\nfn ",
            "\nasync fn ",
        ]
        .iter()
        .filter_map(|m| after.find(m))
        .min()
        .unwrap_or(after.len());
        let methods = &after[..end];
        for m in METHODS {
            let call = format!("{m}(");
            let found = methods.match_indices(&call).any(|(i, _)| {
                i == 0
                    || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && methods.as_bytes()[i - 1] != b'_'
            });
            if found {
                out.push((m.to_uppercase(), path.to_string()));
            }
        }
    }
    out
}

/// `(METHOD, path)` of every operation in the spec (the layout
/// docs/openapi.yaml is written in: paths at 2 spaces, methods at 4).
fn routes_in_spec(spec: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_paths = false;
    let mut path = None;
    for line in spec.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let (Some(p), Some(m)) = (
            &path,
            line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
        ) {
            if METHODS.contains(&m) {
                out.push((m.to_uppercase(), p.clone()));
            }
        }
    }
    out
}

#[test]
fn the_routers_and_the_openapi_file_list_the_same_routes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut server = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("src/http")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("spec_routes.rs") {
            server.extend(routes_in_source(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    let spec = std::fs::read_to_string(root.join("../docs/openapi.yaml")).unwrap();
    let spec: BTreeSet<_> = routes_in_spec(&spec).into_iter().collect();
    assert!(
        server.len() >= 30,
        "routes found in the routers: {server:?}"
    );
    let missing: Vec<_> = server.difference(&spec).collect();
    let stale: Vec<_> = spec.difference(&server).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/openapi.yaml lacks {missing:?}; lists routes no router has: {stale:?}"
    );
}

#[test]
fn route_calls_are_read_with_their_methods() {
    let src = r#"
        Router::new()
            .route("/a", post(x))
            .route(
                "/b",
                get(|| async { Json(json!({"code": 0})) }),
            )
            .route("/c", get(c_get).put(c_put).delete(c_delete))
            .merge(other())
    "#;
    assert_eq!(
        routes_in_source(src),
        [
            ("POST".to_string(), "/a".to_string()),
            ("GET".into(), "/b".into()),
            ("GET".into(), "/c".into()),
            ("PUT".into(), "/c".into()),
            ("DELETE".into(), "/c".into()),
        ]
    );
    let spec = "openapi: 3.1.0\npaths:\n  /a:\n    servers: []\n    post:\n      summary: x\n  /c:\n    get:\n      responses: {}\ncomponents:\n  /x:\n    get:\n";
    assert_eq!(
        routes_in_spec(spec),
        [
            ("POST".to_string(), "/a".to_string()),
            ("GET".into(), "/c".into())
        ]
    );
}
