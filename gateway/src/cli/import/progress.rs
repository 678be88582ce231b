//! Import progress on stderr: an indicatif bar (bytes of the file done,
//! messages per second, ETA) when stderr is a terminal, else one plain
//! line every `interval` (logs, CI, pipes), and the final summary line.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the summary and every progress line report.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub imported: u64,
    pub duplicates: u64,
    pub refused: u64,
    /// Lines `--resume` skipped (already in the id map).
    pub skipped: u64,
}

impl Counts {
    pub fn lines(&self) -> u64 {
        self.imported + self.duplicates + self.refused + self.skipped
    }
}

pub struct Progress {
    started: Instant,
    total_bytes: u64,
    view: View,
}

enum View {
    Bar(ProgressBar),
    Plain { every: Duration, last: Instant },
}

impl Progress {
    /// `total_bytes`: the file's size (what the bar and the ETA measure).
    pub fn new(total_bytes: u64, interval: Duration) -> Self {
        let started = Instant::now();
        let view = if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{bar:40.cyan/blue} {percent:>3}% {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            View::Bar(bar)
        } else {
            View::Plain {
                every: interval,
                last: started,
            }
        };
        Progress {
            started,
            total_bytes,
            view,
        }
    }

    /// `done_bytes` of the file are confirmed (every line before them).
    pub fn update(&mut self, done_bytes: u64, c: &Counts) {
        let elapsed = self.started.elapsed();
        match &mut self.view {
            View::Bar(bar) => {
                bar.set_position(done_bytes);
                bar.set_message(format!(
                    "{} lines, {:.0} msg/s",
                    c.lines(),
                    rate(c, elapsed)
                ));
            }
            View::Plain { every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    eprintln!(
                        "{}",
                        self::plain_line(done_bytes, self.total_bytes, c, elapsed)
                    );
                }
            }
        }
    }

    /// Close the bar and print the summary line; the elapsed time.
    pub fn finish(&mut self, c: &Counts) -> Duration {
        let elapsed = self.started.elapsed();
        if let View::Bar(bar) = &self.view {
            bar.finish_and_clear();
        }
        eprintln!(
            "import: {} imported, {} duplicates, {} refused, {} skipped in {:.1} s ({:.0} msg/s)",
            c.imported,
            c.duplicates,
            c.refused,
            c.skipped,
            elapsed.as_secs_f64(),
            rate(c, elapsed)
        );
        elapsed
    }

    /// Print a line without tearing the bar.
    pub fn println(&self, text: &str) {
        match &self.view {
            View::Bar(bar) => bar.suspend(|| eprintln!("{text}")),
            View::Plain { .. } => eprintln!("{text}"),
        }
    }
}

/// Messages stored or confirmed per second (imported + duplicates).
pub fn rate(c: &Counts, elapsed: Duration) -> f64 {
    (c.imported + c.duplicates) as f64 / elapsed.as_secs_f64().max(1e-3)
}

fn plain_line(done: u64, total: u64, c: &Counts, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let eta = if fraction > 0.0 {
        elapsed.as_secs_f64() * (1.0 - fraction) / fraction
    } else {
        0.0
    };
    format!(
        "import: {:.0}% {} lines ({} imported, {} duplicates, {} refused), {:.0} msg/s, ETA {:.0} s",
        fraction * 100.0,
        c.lines(),
        c.imported,
        c.duplicates,
        c.refused,
        rate(c, elapsed),
        eta
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far_how_fast_and_how_long() {
        let c = Counts {
            imported: 30_000,
            duplicates: 10_000,
            refused: 5,
            skipped: 0,
        };
        let line = plain_line(250, 1_000, &c, Duration::from_secs(2));
        assert_eq!(
            line,
            "import: 25% 40005 lines (30000 imported, 10000 duplicates, 5 refused), \
             20000 msg/s, ETA 6 s"
        );
    }
}
