//! The mosquitto `acl_file` format, parsed into a [`RuleSet`] (the topic
//! ACL of generic MQTT topics, see [`super::acl`]).
//!
//! Accepted as mosquitto writes it (mosquitto.conf(5), `acl_file`):
//! - `# comment` and blank lines are ignored;
//! - `user <name>` starts the section of one user (the name is the rest of
//!   the line: the imgate user id);
//! - `topic [read|write|readwrite|deny] <filter>`: a rule of the current
//!   section; without an access word it is `readwrite` (the filter is then
//!   the whole rest of the line);
//! - `pattern [read|write|readwrite|deny] <filter>` where a whole level
//!   `%u` stands for the user id and `%c` for the client id (device id).
//!   As in mosquitto, patterns apply to every user wherever they stand.
//!
//! Topic rules before any `user` line are anonymous clients' in mosquitto;
//! imgate has no anonymous clients, so they apply to every user, together
//! with the user's own section.
//!
//! Bounded: the file at most [`MAX_FILE_BYTES`], a line at most
//! [`MAX_LINE_BYTES`], at most [`MAX_RULES`] rules. Every error names its
//! line.

use std::collections::HashMap;
use std::path::Path;

use imgate_codecs::mqtt::topic;

/// Largest ACL file (or admin API body).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Longest line.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most `topic` + `pattern` rules in one file.
pub const MAX_RULES: usize = 10_000;

/// What a rule grants, or `Deny` (which wins over every grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    pub fn grants_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    pub fn grants_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub access: Access,
    /// A topic filter (`+`/`#` allowed); for a pattern, `%u`/`%c` levels.
    pub filter: String,
    /// A `pattern` line: `%u`/`%c` are substituted.
    pub pattern: bool,
    /// Its line in the source (for logs).
    pub line: usize,
}

/// A parsed ACL: rules for every user, per-user sections, and patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// `topic` rules before the first `user` line.
    pub everyone: Vec<Rule>,
    /// `topic` rules of each `user` section.
    pub users: HashMap<String, Vec<Rule>>,
    /// Every `pattern` line, wherever it stands.
    pub patterns: Vec<Rule>,
    /// The source text, as given (the admin API returns it).
    pub text: String,
}

impl RuleSet {
    pub fn rule_count(&self) -> usize {
        self.everyone.len() + self.patterns.len() + self.users.values().map(Vec::len).sum::<usize>()
    }
}

/// Why an ACL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclFileError {
    #[error("the ACL is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("line {line}: longer than {max} bytes")]
    LineTooLong { line: usize, max: usize },
    #[error("line {line}: more than {max} rules")]
    TooManyRules { line: usize, max: usize },
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: {why}")]
    Syntax { line: usize, why: String },
    #[error("cannot read {path}: {why}")]
    Io { path: String, why: String },
}

fn syntax(line: usize, why: impl Into<String>) -> AclFileError {
    AclFileError::Syntax {
        line,
        why: why.into(),
    }
}

/// Read and parse an ACL file (size checked before it is read whole).
pub fn load(path: &Path) -> Result<RuleSet, AclFileError> {
    let io = |e: std::io::Error| AclFileError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES as u64 {
        return Err(AclFileError::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            max: MAX_FILE_BYTES,
        });
    }
    parse_bytes(&std::fs::read(path).map_err(io)?)
}

/// Parse ACL bytes (a file or an admin API body).
pub fn parse_bytes(bytes: &[u8]) -> Result<RuleSet, AclFileError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(AclFileError::TooLarge {
            size: bytes.len(),
            max: MAX_FILE_BYTES,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            Err(AclFileError::NotUtf8 { line })
        }
    }
}

/// Parse ACL text.
pub fn parse(text: &str) -> Result<RuleSet, AclFileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(AclFileError::TooLarge {
            size: text.len(),
            max: MAX_FILE_BYTES,
        });
    }
    let mut set = RuleSet {
        text: text.to_owned(),
        ..RuleSet::default()
    };
    let mut user: Option<String> = None;
    let mut rules = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.len() > MAX_LINE_BYTES {
            return Err(AclFileError::LineTooLong {
                line,
                max: MAX_LINE_BYTES,
            });
        }
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (keyword, rest) = match l.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (l, ""),
        };
        match keyword {
            "user" => {
                if rest.is_empty() {
                    return Err(syntax(line, "`user` needs a user name"));
                }
                user = Some(rest.to_owned());
                set.users.entry(rest.to_owned()).or_default();
            }
            "topic" | "pattern" => {
                let (access, filter) = match rest.split_once(char::is_whitespace) {
                    Some((w, f)) => match Access::parse(w) {
                        Some(a) => (a, f.trim()),
                        None => (Access::ReadWrite, rest),
                    },
                    None => match Access::parse(rest) {
                        Some(_) => {
                            return Err(syntax(line, format!("`{keyword} {rest}` needs a topic")))
                        }
                        None => (Access::ReadWrite, rest),
                    },
                };
                if filter.is_empty() {
                    return Err(syntax(line, format!("`{keyword}` needs a topic")));
                }
                if !topic::valid_topic_filter(filter) {
                    return Err(syntax(
                        line,
                        format!("{filter:?} is not a valid topic filter"),
                    ));
                }
                rules += 1;
                if rules > MAX_RULES {
                    return Err(AclFileError::TooManyRules {
                        line,
                        max: MAX_RULES,
                    });
                }
                let pattern = keyword == "pattern";
                let rule = Rule {
                    access,
                    filter: filter.to_owned(),
                    pattern,
                    line,
                };
                match (&user, pattern) {
                    (_, true) => set.patterns.push(rule),
                    (None, false) => set.everyone.push(rule),
                    (Some(u), false) => set.users.entry(u.clone()).or_default().push(rule),
                }
            }
            other => {
                return Err(syntax(
                    line,
                    format!("unknown keyword {other:?} (expected user, topic or pattern)"),
                ))
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mosquitto's own `aclfile.example`, as shipped with mosquitto 2.x.
    const MOSQUITTO_EXAMPLE: &str = "\
# This affects access control for clients with no username.
topic read $SYS/#

# This only affects clients with username \"roger\".
user roger
topic foo/bar

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
";

    fn rule(access: Access, filter: &str, pattern: bool, line: usize) -> Rule {
        Rule {
            access,
            filter: filter.into(),
            pattern,
            line,
        }
    }

    #[test]
    fn mosquitto_example_golden() {
        let set = parse(MOSQUITTO_EXAMPLE).unwrap();
        assert_eq!(set.everyone, vec![rule(Access::Read, "$SYS/#", false, 2)]);
        assert_eq!(
            set.users["roger"],
            vec![rule(Access::ReadWrite, "foo/bar", false, 6)]
        );
        // After `user roger`, yet for everyone: mosquitto's semantics.
        assert_eq!(
            set.patterns,
            vec![rule(
                Access::Write,
                "$SYS/broker/connection/%c/state",
                true,
                9
            )]
        );
        assert_eq!(set.rule_count(), 3);
        assert_eq!(set.text, MOSQUITTO_EXAMPLE);
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../../examples/acl.conf");
        let set = parse(text).unwrap();
        assert!(set
            .patterns
            .iter()
            .any(|r| r.filter == "devices/%u/#" && r.access == Access::ReadWrite));
        assert!(set.users.contains_key("ops"));
    }

    #[test]
    fn access_words_deny_sections_and_whitespace() {
        let set = parse(
            "  # indented comment\r\n\
             topic deny  secret/#\r\n\
             user  alice smith \n\
             topic readwrite a/+/b\n\
             \ttopic write w\n\
             user bob\n\
             topic read r/#\n\
             user alice smith\n\
             topic deny a/x/b\n",
        )
        .unwrap();
        assert_eq!(set.everyone, vec![rule(Access::Deny, "secret/#", false, 2)]);
        assert_eq!(set.users["alice smith"].len(), 3, "sections add up");
        assert_eq!(set.users["alice smith"][1].access, Access::Write);
        assert_eq!(set.users["bob"], vec![rule(Access::Read, "r/#", false, 7)]);
    }

    #[test]
    fn errors_name_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("topic a\nbogus line\n", 2, "unknown keyword"),
            ("\n\nuser\n", 3, "user name"),
            ("topic read\n", 1, "needs a topic"),
            ("# c\ntopic read a/#/b\n", 2, "not a valid topic filter"),
            ("pattern write x+\n", 1, "not a valid topic filter"),
        ];
        for (text, line, what) in cases {
            let e = parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("line {line}:")) && msg.contains(what),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("topic {}\n", "a".repeat(MAX_LINE_BYTES));
        assert_eq!(
            parse(&format!("topic x\n{long}")).unwrap_err(),
            AclFileError::LineTooLong {
                line: 2,
                max: MAX_LINE_BYTES
            }
        );
        let many: String = (0..=MAX_RULES).map(|i| format!("topic t/{i}\n")).collect();
        assert_eq!(
            parse(&many).unwrap_err(),
            AclFileError::TooManyRules {
                line: MAX_RULES + 1,
                max: MAX_RULES
            }
        );
        let huge = vec![b'#'; MAX_FILE_BYTES + 1];
        assert!(matches!(
            parse_bytes(&huge),
            Err(AclFileError::TooLarge { .. })
        ));
        assert_eq!(
            parse_bytes(b"topic a\ntopic \xff\n").unwrap_err(),
            AclFileError::NotUtf8 { line: 2 }
        );
    }
}
