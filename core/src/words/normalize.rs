//! Text normalization for word matching, keeping a map back to the original.

use super::t2s_table::T2S;

/// Normalized text and, for each of its characters, the byte span of the
/// original character it came from.
pub struct Normalized {
    pub text: String,
    /// (byte offset in `text`, original start, original end) per char.
    map: Vec<(usize, usize, usize)>,
}

impl Normalized {
    /// The original byte span covering normalized bytes `[start, end)`.
    pub fn original_span(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let first = self.map.partition_point(|(at, _, _)| *at < start);
        let last = self
            .map
            .partition_point(|(at, _, _)| *at < end)
            .checked_sub(1)?;
        let (_, s, _) = self.map.get(first)?;
        let (_, _, e) = self.map.get(last)?;
        (s < e).then_some((*s, *e))
    }
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}')
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_ascii_punctuation()
        || c.is_control()
        || matches!(c,
            '\u{00B7}' | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
            | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301F}'
            | '\u{30FB}' | '\u{FE10}'..='\u{FE19}' | '\u{FE30}'..='\u{FE6B}')
}

/// Full-width ASCII variants and the ideographic space to their ASCII form.
fn half_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Traditional Chinese to its simplified form (OpenCC's character table),
/// so a word listed in either script matches text written in the other.
fn simplified(c: char) -> char {
    if (c as u32) < 0x3400 {
        return c; // below CJK Extension A: nothing to fold
    }
    match T2S.binary_search_by_key(&c, |&(t, _)| t) {
        Ok(i) => T2S[i].1,
        Err(_) => c,
    }
}

/// The normalized text alone (no position map): the fast path.
pub fn normalize_text(input: &str) -> String {
    let mut text = String::with_capacity(input.len());
    for c in input.chars() {
        if is_invisible(c) {
            continue;
        }
        let c = simplified(half_width(c));
        if !is_separator(c) {
            text.extend(c.to_lowercase());
        }
    }
    text
}

/// The normalized text and the map back to the original.
pub fn normalize(input: &str) -> Normalized {
    let mut text = String::with_capacity(input.len());
    let mut map = Vec::with_capacity(input.len());
    for (start, c) in input.char_indices() {
        let end = start + c.len_utf8();
        if is_invisible(c) {
            continue;
        }
        let c = simplified(half_width(c));
        if is_separator(c) {
            continue;
        }
        for lower in c.to_lowercase() {
            map.push((text.len(), start, end));
            text.push(lower);
        }
    }
    Normalized { text, map }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_width_case_and_separators() {
        assert_eq!(normalize("ＡＢＣ ｄ-E_f").text, "abcdef");
        assert_eq!(normalize("敏　感\u{200b}词。").text, "敏感词");
        assert_eq!(
            normalize_text("ＡＢＣ ｄ-E_f 敏\u{200b}感"),
            normalize("ＡＢＣ ｄ-E_f 敏\u{200b}感").text
        );
        // Traditional folds to simplified, one character for one.
        assert_eq!(normalize_text("敏感詞"), "敏感词");
        assert_eq!(normalize_text("髮廊 後門"), "发廊后门");
        let t = normalize("買賣");
        assert_eq!(t.text, "买卖");
        assert_eq!(t.original_span(0, 3), Some((0, 3)));
        // Folding is idempotent and sorted for the binary search.
        assert!(T2S.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(T2S.iter().all(|&(_, s)| simplified(s) == s));
        let n = normalize("x Y");
        assert_eq!(n.original_span(1, 2), Some((2, 3)));
        assert_eq!(n.original_span(5, 6), None);
    }
}
