//! The gateway's top-level modules import each other without cycles: a
//! test reads this crate's sources, takes every `crate::<module>` path
//! outside comments as an edge from the module whose file holds it, and
//! fails with the cycle if the graph has one.
//!
//! The layers it keeps, lowest first: `config` (settings, the listener
//! table), `metrics`, `transport`, the services (`policy`,
//! `device_secrets`, `scram_keys`, `webhooks`, `conversations`, …), then
//! `sessions` (the driver every protocol runs on and its context), the
//! protocols (`pb`, `mqtt`, `xmpp`), and on top `state`, `http`, `server`
//! and `cli`, which assemble the rest. A lower module that needs to reach
//! up gets a callback or a small context from above instead of an import.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading the source tree") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The modules named by `crate::` paths in `code` (one line, no
    /// comment), including each name of a `crate::{a, b::c}` group.
    fn crate_paths(code: &str, out: &mut BTreeSet<String>) {
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0usize;
                let mut start = true;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && depth == 0 && !c.is_whitespace() => {
                            out.insert(ident(&group[j..]));
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                out.insert(ident(rest));
            }
        }
    }

    /// Top-level module → the other top-level modules it imports.
    fn import_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let mut files = Vec::new();
        sources(root, &mut files);
        let module_of = |path: &Path| -> String {
            let rel = path.strip_prefix(root).expect("under the root");
            let first = rel.components().next().expect("a component");
            let name = first.as_os_str().to_string_lossy();
            name.strip_suffix(".rs").unwrap_or(&name).to_string()
        };
        let modules: BTreeSet<String> = files
            .iter()
            .map(|p| module_of(p))
            .filter(|m| m != "main")
            .collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = modules
            .iter()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        for path in &files {
            let from = module_of(path);
            if from == "main" {
                continue;
            }
            let text = std::fs::read_to_string(path).expect("reading a source file");
            let mut names = BTreeSet::new();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                crate_paths(code, &mut names);
            }
            let edges = graph.get_mut(&from).expect("a module");
            for to in names {
                if to != from && modules.contains(&to) {
                    edges.insert(to);
                }
            }
        }
        graph
    }

    /// A cycle through `start`, if there is one (depth-first search).
    fn cycle_through(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
    ) -> Option<Vec<String>> {
        let mut stack = vec![(start.to_string(), vec![start.to_string()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in &graph[&at] {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.to_string());
                    return Some(cycle);
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
        None
    }

    #[test]
    fn crate_paths_are_read_from_plain_and_grouped_imports() {
        let mut names = BTreeSet::new();
        crate_paths(
            "use crate::{admin_sign, secrets::{a, b}, config};",
            &mut names,
        );
        crate_paths(
            "let x = crate::state::AppState::new(crate::metrics::M);",
            &mut names,
        );
        let want = ["admin_sign", "config", "metrics", "secrets", "state"];
        assert_eq!(names, want.iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn a_cycle_is_found_and_a_layered_graph_has_none() {
        let graph = |edges: &[(&str, &str)]| {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in edges {
                g.entry(a.to_string()).or_default().insert(b.to_string());
                g.entry(b.to_string()).or_default();
            }
            g
        };
        let layered = graph(&[
            ("state", "sessions"),
            ("sessions", "config"),
            ("state", "config"),
        ]);
        assert!(layered.keys().all(|m| cycle_through(&layered, m).is_none()));
        let cyclic = graph(&[
            ("state", "sessions"),
            ("sessions", "mqtt"),
            ("mqtt", "state"),
        ]);
        assert_eq!(
            cycle_through(&cyclic, "state"),
            Some(vec![
                "state".into(),
                "sessions".into(),
                "mqtt".into(),
                "state".into()
            ])
        );
    }

    #[test]
    fn the_gateway_modules_have_no_import_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let graph = import_graph(&root);
        assert!(graph.len() > 10, "read the modules: {:?}", graph.keys());
        let cycles: Vec<String> = graph
            .keys()
            .filter_map(|m| cycle_through(&graph, m))
            .map(|c| c.join(" -> "))
            .collect();
        assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    }
}
