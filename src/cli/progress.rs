//! Progress reporting for long client commands: a progress bar on a
//! terminal, a line every few seconds on stderr otherwise (logs, CI).

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a progress line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// What a [`Progress`] counts, in the singular and the plural.
#[derive(Debug, Clone, Copy)]
pub struct Noun {
    /// For a count of 1.
    pub one: &'static str,
    /// For any other count, and for rates.
    pub many: &'static str,
}

/// Input lines, for `ingest`.
pub const LINES: Noun = Noun {
    one: "line",
    many: "lines",
};

/// Articles, for `export`.
pub const ARTICLES: Noun = Noun {
    one: "article",
    many: "articles",
};

impl Noun {
    /// "1 line", "0 lines", "2 lines".
    pub fn count(self, n: u64) -> String {
        format!("{n} {}", if n == 1 { self.one } else { self.many })
    }
}

/// Counts articles and bytes and shows them.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    /// Input size in bytes, when known: gives percent and ETA.
    total: Option<u64>,
    /// What is counted (lines, articles).
    noun: Noun,
    articles: u64,
    bytes: u64,
    position: u64,
}

impl Progress {
    /// Starts reporting `noun`s; `total` is the input size when known.
    pub fn new(total: Option<u64>, noun: Noun) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::new(total),
                    "{bar:30} {percent:>3}% {msg} ETA {eta}",
                ),
                None => (ProgressBar::new_spinner(), "{spinner} {msg}"),
            };
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            started: now,
            last_line: now,
            total,
            noun,
            articles: 0,
            bytes: 0,
            position: 0,
        }
    }

    /// Records one more item of `bytes` bytes; `position` is how far into
    /// the input (in its own bytes, compressed or not) the work has got.
    pub fn add(&mut self, bytes: u64, position: u64) {
        self.articles += 1;
        self.bytes += bytes;
        self.position = position;
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            if self.articles % 64 == 1 {
                bar.set_message(self.rates());
            }
        } else if self.last_line.elapsed() >= LINE_INTERVAL {
            self.last_line = Instant::now();
            eprintln!("progress: {}{}", self.rates(), self.percent_and_eta());
        }
    }

    /// Prints a message without breaking the bar.
    pub fn println(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// "N lines, R lines/s, M MB/s" ("1 line, …" for one).
    pub fn rates(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "{}, {:.0} {}/s, {:.1} MB/s",
            self.noun.count(self.articles),
            self.articles as f64 / seconds,
            self.noun.many,
            self.bytes as f64 / 1e6 / seconds,
        )
    }

    fn percent_and_eta(&self) -> String {
        match self.total {
            Some(total) if total > 0 && self.position > 0 => {
                let done = self.position as f64 / total as f64;
                let eta = self.started.elapsed().as_secs_f64() * (1.0 - done) / done;
                format!(", {:.0}%, ETA {eta:.0} s", done * 100.0)
            }
            _ => String::new(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_one_are_singular_and_others_plural() {
        // "1 lines" read wrong in the summaries.
        assert_eq!(LINES.count(0), "0 lines");
        assert_eq!(LINES.count(1), "1 line");
        assert_eq!(ARTICLES.count(1), "1 article");
        assert_eq!(ARTICLES.count(2011), "2011 articles");
    }
}
