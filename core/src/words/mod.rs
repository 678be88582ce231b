//! The sensitive-word list and its matcher (DESIGN §6 step 5).
//!
//! Text is normalized before matching so that common evasions still match:
//! full-width forms become half-width, case is folded, whitespace,
//! punctuation and zero-width characters are dropped, and traditional
//! Chinese characters become simplified (OpenCC's character table, one
//! character for one: `t2s_table.rs`). Matching is one Aho-Corasick pass
//! over the normalized text (leftmost-longest); each hit maps back to its
//! span in the original text so it can be masked there.
//!
//! The list is swapped atomically on change (an `Arc` behind a lock held
//! only to clone it), so admin changes take effect on the next message.

mod normalize;
mod t2s_table;

pub use normalize::{normalize, normalize_text, Normalized};

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// One match: the listed word and the byte range it covers in the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// An immutable word list with its compiled matcher.
pub struct WordList {
    words: BTreeSet<String>,
    /// The listed word for each pattern index.
    patterns: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl WordList {
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        let words: BTreeSet<String> = words
            .into_iter()
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect();
        let mut patterns = Vec::new();
        let mut normalized = Vec::new();
        for w in &words {
            let n = normalize_text(w);
            if !n.is_empty() {
                patterns.push(w.clone());
                normalized.push(n);
            }
        }
        let matcher = if normalized.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&normalized)
                .map_err(|e| tracing::error!(error = %e, "cannot build the word matcher"))
                .ok()
        };
        WordList {
            words,
            patterns,
            matcher,
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn words(&self) -> impl Iterator<Item = &String> {
        self.words.iter()
    }

    /// Every hit in `text`, left to right, non-overlapping.
    pub fn scan(&self, text: &str) -> Vec<Hit> {
        let Some(matcher) = &self.matcher else {
            return Vec::new();
        };
        if text.is_empty() {
            return Vec::new();
        }
        // Most messages match nothing: check that without building the
        // position map, which only hits need.
        if !matcher.is_match(&normalize_text(text)) {
            return Vec::new();
        }
        let n = normalize(text);
        matcher
            .find_iter(&n.text)
            .filter_map(|m| {
                let (start, end) = n.original_span(m.start(), m.end())?;
                Some(Hit {
                    word: self.patterns.get(m.pattern().as_usize())?.clone(),
                    start,
                    end,
                })
            })
            .collect()
    }

    /// `text` with each hit's characters replaced by `*`, and the hits.
    pub fn mask(&self, text: &str) -> (String, Vec<Hit>) {
        let hits = self.scan(text);
        if hits.is_empty() {
            return (text.to_string(), hits);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for h in &hits {
            out.push_str(&text[at..h.start]);
            out.extend(std::iter::repeat_n(
                '*',
                text[h.start..h.end].chars().count(),
            ));
            at = h.end;
        }
        out.push_str(&text[at..]);
        (out, hits)
    }
}

/// The live word list: read on every message, replaced on admin changes.
pub struct WordFilter {
    current: RwLock<Arc<WordList>>,
}

impl WordFilter {
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        WordFilter {
            current: RwLock::new(Arc::new(WordList::new(words))),
        }
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<WordList> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, f: impl FnOnce(&mut BTreeSet<String>) -> usize) -> usize {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut words: BTreeSet<String> = guard.words.clone();
        let changed = f(&mut words);
        if changed > 0 {
            *guard = Arc::new(WordList::new(words));
        }
        changed
    }

    /// Replace the whole list (a policy snapshot from another node).
    pub fn replace_all(&self, words: Vec<String>) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(WordList::new(words));
    }

    /// Add words; how many were new.
    pub fn add(&self, words: &[String]) -> usize {
        self.replace(|set| {
            words
                .iter()
                .map(|w| w.trim())
                .filter(|w| !w.is_empty())
                .filter(|w| set.insert(w.to_string()))
                .count()
        })
    }

    /// Remove words; how many were listed.
    pub fn remove(&self, words: &[String]) -> usize {
        self.replace(|set| words.iter().filter(|w| set.remove(w.trim())).count())
    }

    pub fn words(&self) -> Vec<String> {
        self.current().words().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(words: &[&str]) -> WordList {
        WordList::new(words.iter().map(|s| s.to_string()))
    }

    #[test]
    fn matches_through_evasions_and_maps_back() {
        let l = list(&["badword", "敏感词"]);
        for text in [
            "a BadWord b",
            "a ｂａｄｗｏｒｄ b",
            "a b.a.d-w o r d b",
            "a bad\u{200b}word b",
            "含有敏 感\u{200d}词的句子",
        ] {
            let hits = l.scan(text);
            assert_eq!(hits.len(), 1, "{text:?}");
            let hit = &hits[0];
            assert!(!text[hit.start..hit.end].is_empty());
        }
        assert!(l.scan("a good word").is_empty());
        assert!(l.scan("").is_empty());
    }

    #[test]
    fn traditional_and_simplified_match_each_other() {
        let l = list(&["敏感词", "發票"]);
        let (masked, hits) = l.mask("這是敏感詞嗎？开发票");
        assert_eq!(masked, "這是***嗎？开**");
        let words: Vec<&str> = hits.iter().map(|h| h.word.as_str()).collect();
        assert_eq!(words, ["敏感词", "發票"]);
    }

    #[test]
    fn mask_replaces_only_the_hit_characters() {
        let l = list(&["bad", "坏蛋"]);
        let (masked, hits) = l.mask("not BAD at all, 你是坏蛋!");
        assert_eq!(masked, "not *** at all, 你是**!");
        assert_eq!(
            hits.iter().map(|h| h.word.as_str()).collect::<Vec<_>>(),
            vec!["bad", "坏蛋"]
        );
        let (masked, _) = l.mask("b-a-d");
        assert_eq!(masked, "*****");
    }

    #[test]
    fn longest_match_wins_and_updates_take_effect() {
        let f = WordFilter::new(vec!["ab".to_string()]);
        assert_eq!(f.current().scan("xabcx")[0].word, "ab");
        assert_eq!(f.add(&["abc".into(), "ab".into(), " ".into()]), 1);
        assert_eq!(f.current().scan("xabcx")[0].word, "abc");
        assert_eq!(f.remove(&["abc".into(), "zzz".into()]), 1);
        assert_eq!(f.words(), vec!["ab".to_string()]);
        assert_eq!(f.remove(&["ab".into()]), 1);
        assert!(f.current().scan("ab").is_empty());
    }
}
