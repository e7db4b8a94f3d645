//! Progress reporting for long client commands: a progress bar on a
//! terminal, a line every few seconds on stderr otherwise (logs, CI).

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a progress line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Counts articles and bytes and shows them.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    /// Input size in bytes, when known: gives percent and ETA.
    total: Option<u64>,
    /// What is counted ("lines", "articles").
    noun: &'static str,
    articles: u64,
    bytes: u64,
    position: u64,
}

impl Progress {
    /// Starts reporting `noun`s; `total` is the input size when known.
    pub fn new(total: Option<u64>, noun: &'static str) -> Self {
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

    /// "N lines, R lines/s, M MB/s".
    pub fn rates(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "{} {noun}, {:.0} {noun}/s, {:.1} MB/s",
            self.articles,
            self.articles as f64 / seconds,
            self.bytes as f64 / 1e6 / seconds,
            noun = self.noun,
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
