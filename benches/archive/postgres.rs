//! The peer a user would pick instead: PostgreSQL (Debian's `postgresql`
//! package) on a temporary cluster on loopback, given the same articles, the
//! same lookups by id and the same keyset-paginated date ranges as the
//! archive, so each of its figures has a PostgreSQL twin.
//!
//! The table has every field of an article, `authors` and `tags` as `text[]`,
//! a primary key on id and an index on (published_at, id). Articles are
//! loaded with `COPY ... FROM STDIN (FORMAT binary)`, one COPY per batch of
//! 1024 (the archive writer's batch), each COPY its own transaction, with
//! fsync and synchronous_commit on as the archive flushes before every
//! acknowledgement. Generating a batch and deriving its ids happen before
//! the batch's clock starts. Every row read is decoded into owned values, as
//! the archive's client decodes every message.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    pin::pin,
    process::Command,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use article_archive::proto;
use tokio::runtime::Runtime;
use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type, Client, NoTls, Row};

use crate::workload::{query_day, Latencies};

fn find_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Finds PostgreSQL, installing Debian's package when missing and possible.
fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = find_bin_dir() {
        return Ok(dir);
    }
    println!("PostgreSQL: not installed; trying apt-get install postgresql");
    let installed = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql"])
        .status()
        .map_err(|e| format!("PostgreSQL is not installed and apt-get cannot run: {e}"))?;
    if !installed.success() {
        return Err(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and apt-get install postgresql failed (not root, or no package index)"
                .into(),
        );
    }
    find_bin_dir().ok_or_else(|| "initdb not found after installing postgresql".into())
}

/// A cluster in a temporary directory, stopped on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(bin: PathBuf, parent: &Path) -> Result<Self, String> {
        let root = parent.join("postgres");
        let data = root.join("data");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        // initdb refuses to run as root; the package creates a postgres user.
        let as_postgres = |args: &[&str]| -> Result<(), String> {
            let output = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .map_err(|e| format!("runuser: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        };
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(parent)
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err("cannot hand the temporary directory to the postgres user".into());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let bin_path = |name: &str| bin.join(name).display().to_string();
        as_postgres(&[
            &bin_path("initdb"),
            "-D",
            &data.display().to_string(),
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
        ])?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c shared_buffers=256MB -c max_connections=200",
            root.display()
        );
        as_postgres(&[
            &bin_path("pg_ctl"),
            "-D",
            &data.display().to_string(),
            "-o",
            &options,
            "-w",
            "-l",
            &root.join("log").display().to_string(),
            "start",
        ])?;
        Ok(Self { bin, data, port })
    }

    async fn connect(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .await
        .expect("connecting to the temporary cluster");
        tokio::spawn(connection);
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "fast", "stop"])
            .output();
    }
}

const CREATE_TABLE: &str = "DROP TABLE IF EXISTS articles;
    CREATE TABLE articles (id text PRIMARY KEY, url text NOT NULL, title text NOT NULL,
      body text NOT NULL, published_at timestamptz NOT NULL, authors text[] NOT NULL,
      source text NOT NULL, section text NOT NULL, tags text[] NOT NULL, language text NOT NULL,
      description text NOT NULL);
    CREATE INDEX articles_by_date ON articles (published_at, id);";

const COPY: &str = "COPY articles (id, url, title, body, published_at, authors, source, section, tags, language, description)
    FROM STDIN (FORMAT binary)";

const COPY_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
];

/// The columns of the archive's BASIC view (every field but the body) and
/// of its FULL view. `published_at` comes fourth in both, for keyset pages.
const BASIC_COLUMNS: &str =
    "id, url, title, published_at, authors, source, section, tags, language, description";
const FULL_COLUMNS: &str =
    "id, url, title, published_at, authors, source, section, tags, language, description, body";

/// Decodes a row of BASIC or FULL columns into owned values; returns the
/// bytes decoded so the work cannot be optimised away.
fn decode(row: &Row) -> usize {
    let text = |i: usize| row.get::<_, String>(i).len();
    let list = |i: usize| row.get::<_, Vec<String>>(i).len();
    let at: SystemTime = row.get(3);
    std::hint::black_box(at);
    let basic =
        text(0) + text(1) + text(2) + list(4) + text(5) + text(6) + list(7) + text(8) + text(9);
    if row.len() > 10 {
        basic + text(10)
    } else {
        basic
    }
}

fn system_time(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// A running cluster with the articles table.
pub struct Postgres {
    // Declared before the cluster so the connection closes before the
    // cluster stops.
    client: Client,
    cluster: Cluster,
}

impl Postgres {
    /// Finds or installs PostgreSQL and starts a temporary cluster under
    /// `parent`.
    ///
    /// # Errors
    /// Why PostgreSQL cannot run here (not installed and not installable,
    /// the cluster would not start).
    pub fn start(runtime: &Runtime, parent: &Path) -> Result<Self, String> {
        let bin = postgres_bin_dir()?;
        let cluster = Cluster::start(bin, parent)?;
        let client = runtime.block_on(cluster.connect());
        Ok(Self { client, cluster })
    }

    /// The server's version, for the table titles.
    pub async fn version(&self) -> String {
        self.client
            .query_one("SHOW server_version", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The url of database `db` of this cluster, for `serve --store`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.cluster.port
        )
    }

    /// Creates database `db` (a plain lower-case name) unless it exists.
    pub async fn create_database(&self, db: &str) {
        let exists = self
            .client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .unwrap()
            .is_some();
        if !exists {
            self.client
                .batch_execute(&format!("CREATE DATABASE \"{db}\""))
                .await
                .unwrap();
        }
    }

    /// `pg_database_size` of database `db`: its tables, TOAST, indexes and
    /// catalogs (not the cluster's WAL).
    pub async fn database_size(&self, db: &str) -> u64 {
        let size: i64 = self
            .client
            .query_one("SELECT pg_database_size($1::text::name)", &[&db])
            .await
            .unwrap()
            .get(0);
        size as u64
    }

    /// The next transaction id the cluster will assign: transactions that
    /// wrote (committed or not) between two reads are the difference.
    /// Reading it assigns none.
    pub async fn next_xid(&self) -> i64 {
        self.client
            .query_one(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// The postmaster's pid: it and its children are the cluster.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.cluster.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The cluster's log lines at WARNING and above (ERROR, FATAL, PANIC).
    pub fn log_problems(&self) -> Vec<String> {
        let log = self.cluster.data.with_file_name("log");
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                ["WARNING:", "ERROR:", "FATAL:", "PANIC:"]
                    .iter()
                    .any(|level| l.contains(level))
            })
            .map(str::to_string)
            .collect()
    }

    /// An empty articles table (dropping the one a previous section filled).
    pub async fn create_table(&self) {
        self.client.batch_execute(CREATE_TABLE).await.unwrap();
    }

    /// Loads one batch with one COPY (one transaction); returns its time.
    pub async fn load_batch(&self, ids: &[String], articles: &[proto::Article]) -> Duration {
        let started = Instant::now();
        let sink = self.client.copy_in(COPY).await.unwrap();
        let mut writer = pin!(BinaryCopyInWriter::new(sink, COPY_TYPES));
        for (id, a) in ids.iter().zip(articles) {
            let published = a.published_at.expect("generated articles are dated");
            let published = system_time(published.seconds);
            writer
                .as_mut()
                .write(&[
                    id,
                    &a.url,
                    &a.title,
                    &a.body,
                    &published,
                    &a.authors,
                    &a.source,
                    &a.section,
                    &a.tags,
                    &a.language,
                    &a.description,
                ])
                .await
                .unwrap();
        }
        writer.finish().await.unwrap();
        started.elapsed()
    }

    /// Statistics for the planner and the visibility map, as autovacuum
    /// would eventually give them; not timed.
    pub async fn analyze(&self) {
        self.client
            .batch_execute("VACUUM ANALYZE articles")
            .await
            .unwrap();
    }

    /// `count` connections for concurrent lookups: PostgreSQL serves one
    /// query at a time per connection.
    pub async fn connections(&self, count: usize) -> Vec<Arc<Client>> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(Arc::new(self.cluster.connect().await));
        }
        clients
    }

    /// Table, TOAST and indexes.
    pub async fn disk_bytes(&self) -> u64 {
        let size: i64 = self
            .client
            .query_one("SELECT pg_total_relation_size('articles')", &[])
            .await
            .unwrap()
            .get(0);
        size as u64
    }

    /// Whole articles by id, one worker per connection, back to back for
    /// `seconds`, ids picked as the archive's Get workers pick them; with
    /// `prepare_each`, each call prepares its statement first (a round trip
    /// and a parse more), as a client without a statement cache does.
    pub async fn gets(
        clients: &[Arc<Client>],
        ids: &Arc<Vec<String>>,
        seconds: f64,
        prepare_each: bool,
    ) -> Latencies {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let mut workers = Vec::new();
        for (w, client) in clients.iter().enumerate() {
            let (client, ids) = (Arc::clone(client), Arc::clone(ids));
            workers.push(tokio::spawn(async move {
                let sql = format!("SELECT {FULL_COLUMNS} FROM articles WHERE id = $1");
                let prepared = client.prepare(&sql).await.unwrap();
                let mut samples = Vec::new();
                let mut n = w as u64 * 7_919;
                while Instant::now() < deadline {
                    n = n.wrapping_add(0x9E37_79B9);
                    let id = &ids[(n as usize) % ids.len()];
                    let t = Instant::now();
                    let statement = if prepare_each {
                        client.prepare(&sql).await.unwrap()
                    } else {
                        prepared.clone()
                    };
                    let row = client.query_one(&statement, &[id]).await.unwrap();
                    std::hint::black_box(decode(&row));
                    samples.push(t.elapsed());
                }
                samples
            }));
        }
        let mut samples = Vec::new();
        for w in workers {
            samples.extend(w.await.unwrap());
        }
        Latencies::new(samples, started.elapsed())
    }

    /// The twin of the archive's range lists: `queries` pages of at most
    /// `page_size` BASIC rows from the same days, `span` seconds long
    /// (unbounded when `None`). Returns the latencies and the mean rows per
    /// page.
    pub async fn ranges(
        &self,
        queries: usize,
        span: Option<i64>,
        page_size: i64,
    ) -> (Latencies, f64) {
        let bounded = self
            .client
            .prepare(&format!(
                "SELECT {BASIC_COLUMNS} FROM articles WHERE published_at >= $1 AND published_at < $2
                 ORDER BY published_at, id LIMIT $3"
            ))
            .await
            .unwrap();
        let open = self
            .client
            .prepare(&format!(
                "SELECT {BASIC_COLUMNS} FROM articles WHERE published_at >= $1
                 ORDER BY published_at, id LIMIT $2"
            ))
            .await
            .unwrap();
        let mut samples = Vec::with_capacity(queries);
        let mut rows_seen = 0;
        let started = Instant::now();
        for q in 0..queries {
            let day = query_day(q);
            let from = system_time(day);
            let t = Instant::now();
            let rows = match span {
                Some(span) => {
                    let to = system_time(day + span);
                    self.client.query(&bounded, &[&from, &to, &page_size]).await
                }
                None => self.client.query(&open, &[&from, &page_size]).await,
            }
            .unwrap();
            for row in &rows {
                std::hint::black_box(decode(row));
            }
            samples.push(t.elapsed());
            rows_seen += rows.len();
        }
        (
            Latencies::new(samples, started.elapsed()),
            rows_seen as f64 / queries as f64,
        )
    }

    /// Walks the whole table in keyset pages of `page_size`, with bodies
    /// (every column) or without (the BASIC columns).
    pub async fn walk(&self, with_bodies: bool, page_size: i64) -> (usize, Duration) {
        let columns = if with_bodies {
            FULL_COLUMNS
        } else {
            BASIC_COLUMNS
        };
        let first = self
            .client
            .prepare(&format!(
                "SELECT {columns} FROM articles ORDER BY published_at, id LIMIT $1"
            ))
            .await
            .unwrap();
        let next = self
            .client
            .prepare(&format!(
                "SELECT {columns} FROM articles WHERE (published_at, id) > ($1, $2)
                 ORDER BY published_at, id LIMIT $3"
            ))
            .await
            .unwrap();
        let started = Instant::now();
        let mut count = 0;
        let mut rows = self.client.query(&first, &[&page_size]).await.unwrap();
        while let Some(last) = rows.last() {
            for row in &rows {
                std::hint::black_box(decode(row));
            }
            count += rows.len();
            let id: String = last.get(0);
            let at: SystemTime = last.get(3);
            rows = self
                .client
                .query(&next, &[&at, &id, &page_size])
                .await
                .unwrap();
        }
        (count, started.elapsed())
    }
}
