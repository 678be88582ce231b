//! The subscription trie: one node per topic level, `+` and `#` as
//! literal children. Matching walks the levels of a topic once; filters
//! that start with a wildcard do not match topics that start with `$`
//! (MQTT 5 §4.7.2).

use std::collections::{HashMap, HashSet};

#[derive(Default, Debug)]
struct Node {
    children: HashMap<String, Node>,
    /// Sessions subscribed with exactly the filter ending here.
    subscribers: HashSet<String>,
}

#[derive(Default, Debug)]
pub struct SubscriptionTrie {
    root: Node,
}

impl SubscriptionTrie {
    pub fn insert(&mut self, filter: &str, session: &str) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
        }
        node.subscribers.insert(session.to_owned());
    }

    pub fn remove(&mut self, filter: &str, session: &str) {
        let levels: Vec<&str> = filter.split('/').collect();
        remove(&mut self.root, &levels, session);
    }

    /// Every `(session, filter)` whose filter matches `topic`.
    pub fn matches(&self, topic: &str) -> Vec<(String, String)> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut out = Vec::new();
        let mut path = Vec::new();
        collect(
            &self.root,
            &levels,
            topic.starts_with('$'),
            &mut path,
            &mut out,
        );
        out
    }
}

fn remove(node: &mut Node, levels: &[&str], session: &str) -> bool {
    match levels.split_first() {
        None => {
            node.subscribers.remove(session);
        }
        Some((first, rest)) => {
            if let Some(child) = node.children.get_mut(*first) {
                if remove(child, rest, session) {
                    node.children.remove(*first);
                }
            }
        }
    }
    node.subscribers.is_empty() && node.children.is_empty()
}

fn collect<'a>(
    node: &'a Node,
    levels: &[&str],
    dollar: bool,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(String, String)>,
) {
    let at_root = path.is_empty();
    let wildcards_allowed = !(at_root && dollar);
    let mut emit = |n: &Node, path: &[&str]| {
        let filter = path.join("/");
        for s in &n.subscribers {
            out.push((s.clone(), filter.clone()));
        }
    };
    if wildcards_allowed {
        if let Some(hash) = node.children.get("#") {
            path.push("#");
            emit(hash, path);
            path.pop();
        }
    }
    let Some((first, rest)) = levels.split_first() else {
        emit(node, path);
        return;
    };
    if wildcards_allowed {
        if let Some((k, plus)) = node.children.get_key_value("+") {
            path.push(k);
            collect(plus, rest, dollar, path, out);
            path.pop();
        }
    }
    if *first != "+" && *first != "#" {
        if let Some((k, child)) = node.children.get_key_value(*first) {
            path.push(k);
            collect(child, rest, dollar, path, out);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &SubscriptionTrie, topic: &str) -> Vec<String> {
        let mut v: Vec<String> = t
            .matches(topic)
            .into_iter()
            .map(|(s, f)| format!("{s}:{f}"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn matches_like_the_spec() {
        let mut t = SubscriptionTrie::default();
        t.insert("a/+/c", "s1");
        t.insert("a/#", "s2");
        t.insert("#", "s3");
        t.insert("$SYS/#", "s4");
        t.insert("a/b/c", "s1");
        assert_eq!(
            m(&t, "a/b/c"),
            vec!["s1:a/+/c", "s1:a/b/c", "s2:a/#", "s3:#"]
        );
        assert_eq!(m(&t, "a"), vec!["s2:a/#", "s3:#"]);
        assert_eq!(m(&t, "$SYS/x"), vec!["s4:$SYS/#"]);
        t.remove("a/+/c", "s1");
        t.remove("#", "s3");
        assert_eq!(m(&t, "a/b/c"), vec!["s1:a/b/c", "s2:a/#"]);
        t.remove("a/b/c", "s1");
        t.remove("a/#", "s2");
        assert!(!t.root.children.contains_key("a"));
    }
}
