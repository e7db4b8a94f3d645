//! Shared pieces of the benchmark: article ids and sizes, latency
//! statistics, disk usage and a server process.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use article_archive::{article::Article, proto};

use crate::corpus::{self, article};

/// The id the server gives article `i`.
pub fn id_of(i: usize) -> String {
    id_for(&article(i))
}

/// The id the server gives `article` (derived from its url).
pub fn id_for(article: &proto::Article) -> String {
    Article::from_proto(article.clone())
        .unwrap()
        .id()
        .to_string()
}

/// Start of the day that range query number `q` asks for. Days are drawn
/// the way articles are dated, so queries land where articles are (mostly
/// since 2000), as readers' queries would; the archive and PostgreSQL are
/// asked for the same days.
pub fn query_day(q: usize) -> i64 {
    // Article numbers far beyond any run: dates like articles', not theirs.
    corpus::published_at((1 << 40) + q).div_euclid(86_400) * 86_400
}

/// The bytes of text an article carries (title and body), for MB/s.
pub fn text_bytes(article: &proto::Article) -> usize {
    article.body.len() + article.title.len()
}

/// Raw bytes of an article: every string field, what a plain file of the
/// text would need; disk use is compared against this.
pub fn raw_bytes(a: &proto::Article) -> usize {
    a.url.len()
        + a.title.len()
        + a.body.len()
        + a.source.len()
        + a.section.len()
        + a.language.len()
        + a.description.len()
        + a.authors
            .iter()
            .chain(&a.tags)
            .map(String::len)
            .sum::<usize>()
        + 12
}

/// Latency percentiles of a set of samples.
pub struct Latencies {
    pub count: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl Latencies {
    pub fn new(mut samples: Vec<Duration>, elapsed: Duration) -> Self {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Self {
            count: samples.len(),
            elapsed,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }

    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Bytes the directory's files occupy on disk (allocated blocks).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total += if meta.is_dir() {
                disk_usage(&entry.path())
            } else {
                meta.blocks() * 512
            };
        }
    }
    total
}

/// The real binary serving a data directory (`--data-dir`) or a PostgreSQL
/// database (`--store`), for figures that must not include the benchmark's
/// own memory.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// From spawning the process until it logged "listening on": starting
    /// the process, opening the store (and checking it, after an unclean
    /// stop), binding.
    pub startup: Duration,
    /// The lines it logged before that one.
    pub startup_log: Vec<String>,
}

impl ServerProcess {
    /// Starts `serve` with `store` (`--data-dir DIR` or `--store URL`) and
    /// `extra`, and waits until it listens.
    pub fn start(store: &[String], extra: &[String]) -> Self {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_article-archive"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(store)
            .args(extra)
            .env(
                "RUST_LOG",
                "warn,article_archive=info,article_archive::service=warn",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut startup_log = Vec::new();
        let addr = loop {
            let line = lines.next().expect("the server logs its address").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            startup_log.push(line);
        };
        let startup = started.elapsed();
        // Keep draining stderr so the server never blocks on a full pipe;
        // what it warns about goes to ours, so a failing batch or a lost
        // database connection is not hidden behind its figures.
        let pid = child.id();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    eprintln!("server {pid}: {line}");
                }
            }
        });
        Self {
            child,
            addr,
            startup,
            startup_log,
        }
    }

    /// What the startup check after an unclean stop reported, from the
    /// server's log line: (its own time, records, problems); `None` when
    /// it did not run.
    pub fn startup_check(&self) -> Option<(Duration, u64, u64)> {
        let line = self
            .startup_log
            .iter()
            .find(|l| l.contains("startup check done"))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        };
        let number = |name: &str| field(name).and_then(|v| v.parse().ok());
        Some((
            parse_debug_duration(field("elapsed")?)?,
            number("records")?,
            number("problems")?,
        ))
    }

    /// Peak and current resident memory in bytes (VmHWM, VmRSS).
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// SIGTERM, and waits for the process to exit (a clean stop).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL, and waits for the process to be gone (an unclean stop).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks a second of the times in `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Of `/proc/<pid>/stat`: the parent's pid, and the clock ticks the process
/// spent in user and system mode, and those of its children it waited for
/// (utime + stime, cutime + cstime). `None` once the process is gone.
pub fn process_ticks(pid: u32) -> Option<(u32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((
        number(1)? as u32,
        number(11)? + number(12)?,
        number(13)? + number(14)?,
    ))
}

/// The machine's CPU time so far, in clock ticks of all CPUs together, from
/// the first line of `/proc/stat`: (busy, iowait, idle).
pub fn machine_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let numbers: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy, at(4), at(3))
}

/// Pids of every process running as `uid`.
pub fn processes_of(uid: u32) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                    (e.metadata().ok()?.uid() == uid).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `Duration` as its `Debug` form writes it (`3.2s`, `850.1ms`,
/// `12.5µs`, `900ns`).
pub fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "µs" | "us" => value / 1e6,
        "ns" => value / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// A benchmark that panics midway must not leave its server running.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
