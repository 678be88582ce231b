//! Topic names and filters (MQTT 5 §4.7): validity, matching with `+` and
//! `#`, and the rule that topics starting with `$` are not matched by
//! filters starting with a wildcard.

/// A topic name a client may PUBLISH to: non-empty, no wildcards.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

/// A topic filter: `#` only as the whole last level, `+` only as a whole
/// level.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// A shared subscription filter `$share/{name}/{filter}` (MQTT 5
/// §4.8.2): its share name and inner filter, if well formed (a non-empty
/// name without wildcards, a valid inner filter).
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (name, inner) = rest.split_once('/')?;
    (!name.is_empty() && !name.contains(['+', '#']) && valid_topic_filter(inner))
        .then_some((name, inner))
}

/// Whether `filter` matches `topic` (both assumed valid).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            level => {
                if t.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_dollar_topics() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("+/+", "/a"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(valid_topic_filter("a/+/#"));
        assert!(!valid_topic_filter("a/#/b"));
        assert!(!valid_topic_filter("a/b+"));
        assert!(!valid_topic_name("a/+"));
    }

    #[test]
    fn shared_filters_split_into_name_and_filter() {
        assert_eq!(shared("$share/g1/a/+/b"), Some(("g1", "a/+/b")));
        assert_eq!(shared("$share/g/#"), Some(("g", "#")));
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/a/#/b",
            "share/g/a",
            "$share/g/",
        ] {
            assert_eq!(shared(bad), None, "{bad}");
        }
    }
}
