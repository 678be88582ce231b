//! Sensitive-word filter throughput with 20,000 CJK words.
//!
//! `cargo bench -p imgate-core --bench word_filter` prints MB/s of
//! normalize+scan over mixed CJK/ASCII text, the cost per typical message,
//! and the same with an empty list (what the filter adds to a send).
//! Words and text come from a fixed-seed generator, so runs compare.

use std::hint::black_box;
use std::time::Instant;

use imgate_core::words::WordList;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn cjk(&mut self) -> char {
        // The 3,500 most common CJK characters live roughly here.
        char::from_u32(0x4E00 + (self.next() % 0x1400) as u32).unwrap_or('中')
    }
}

fn main() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let words: Vec<String> = (0..20_000)
        .map(|_| {
            let len = 2 + (rng.next() % 3) as usize;
            (0..len).map(|_| rng.cjk()).collect()
        })
        .collect();
    let build = Instant::now();
    let list = WordList::new(words.clone());
    let build_ms = build.elapsed().as_secs_f64() * 1e3;

    // ~8 MB of text: CJK with ASCII, punctuation and some listed words.
    let mut text = String::new();
    while text.len() < 8 * 1024 * 1024 {
        match rng.next() % 20 {
            0 => text.push_str(&words[(rng.next() % words.len() as u64) as usize]),
            1 => text.push_str(" hello, "),
            2 => text.push('，'),
            _ => text.push(rng.cjk()),
        }
    }
    let mb = text.len() as f64 / (1024.0 * 1024.0);
    let mut best = f64::MAX;
    let mut hits = 0;
    for _ in 0..3 {
        let t = Instant::now();
        hits = black_box(list.scan(black_box(&text))).len();
        best = best.min(t.elapsed().as_secs_f64());
    }

    // Typical chat messages (~100 characters), scanned many times: one
    // that contains listed words and one that does not (the common case).
    let dirty: String = text.chars().take(100).collect();
    let clean: String = "今天下午三点在会议室开会，请大家准时参加，带上笔记本电脑和上周的报告。Thanks, see you there! "
        .repeat(2)
        .chars()
        .take(100)
        .collect();
    let empty = WordList::new(Vec::new());
    let per_msg = |l: &WordList, msg: &str| {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            black_box(l.scan(black_box(msg)));
        }
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let with_words = per_msg(&list, &dirty);
    let clean_cost = per_msg(&list, &clean);
    let without = per_msg(&empty, &clean);
    let clean_hits = list.scan(&clean).len();
    println!("word_filter: 20000 CJK words, matcher built in {build_ms:.1} ms");
    println!(
        "word_filter: scan {mb:.1} MB in {:.1} ms = {:.1} MB/s ({hits} hits)",
        best * 1e3,
        mb / best
    );
    println!("word_filter: per 100-char message with hits: {with_words:.2} us");
    println!(
        "word_filter: per 100-char clean message: {clean_cost:.2} us with 20000 words ({clean_hits} hits), {without:.2} us with an empty list"
    );
}
