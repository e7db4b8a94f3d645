//! The peer a user would pick instead: PostgreSQL (Debian's `postgresql`
//! package) on a temporary cluster on loopback, given the same articles in
//! batches of the same size, the same lookups by primary key and the same
//! keyset-paginated date ranges.
//!
//! The table has a primary key on id and an index on (published_at, id);
//! authors and tags are stored as text. fsync and synchronous_commit stay on,
//! as the archive flushes before every acknowledgement.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use article_archive::{proto, store::BatchLimits};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::workload::{ms, Latencies};

/// What the archive measured on the same articles, to print beside.
pub struct Ours {
    pub ingest_rate: f64,
    pub get: Vec<(usize, f64, Duration)>,
    pub day: Latencies,
    pub walk_rate: f64,
    pub disk_per_article: f64,
}

pub const HEADER: &str =
    "workload                                   PostgreSQL      archive   archive/PostgreSQL";

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
    println!("\n5. PostgreSQL: not installed; trying apt-get install postgresql");
    let installed = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql"])
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !installed.success() {
        return Err("apt-get install postgresql failed".into());
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

const INSERT: &str = "INSERT INTO articles (id, url, title, body, published_at, authors, source, section, tags, language)
    SELECT id, url, title, body, published_at::timestamptz, authors, source, section, tags, language
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
      AS t(id, url, title, body, published_at, authors, source, section, tags, language)";

async fn load(client: &Client, input: &[proto::Article], ids: &[String]) -> Duration {
    let statement = client.prepare(INSERT).await.unwrap();
    let started = Instant::now();
    let batch = BatchLimits::default().max_articles;
    for (chunk, chunk_ids) in input.chunks(batch).zip(ids.chunks(batch)) {
        let column =
            |f: &dyn Fn(&proto::Article) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        let id: Vec<String> = chunk_ids.to_vec();
        let url = column(&|a| a.url.clone());
        let title = column(&|a| a.title.clone());
        let body = column(&|a| a.body.clone());
        let published = column(&|a| a.published_at.unwrap().to_string());
        let authors = column(&|a| a.authors.join(", "));
        let source = column(&|a| a.source.clone());
        let section = column(&|a| a.section.clone());
        let tags = column(&|a| a.tags.join(", "));
        let language = column(&|a| a.language.clone());
        client
            .execute(
                &statement,
                &[
                    &id, &url, &title, &body, &published, &authors, &source, &section, &tags,
                    &language,
                ],
            )
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn gets(clients: &[Arc<Client>], ids: &Arc<Vec<String>>, seconds: f64) -> Latencies {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for (w, client) in clients.iter().enumerate() {
        let (client, ids) = (Arc::clone(client), Arc::clone(ids));
        workers.push(tokio::spawn(async move {
            let statement = client
                .prepare("SELECT id, url, title, body, published_at::text, authors, source, section, tags, language FROM articles WHERE id = $1")
                .await
                .unwrap();
            let mut samples = Vec::new();
            let mut n = w as u64 * 7_919;
            while Instant::now() < deadline {
                n = n.wrapping_add(0x9E37_79B9);
                let id = &ids[(n as usize) % ids.len()];
                let t = Instant::now();
                let row = client.query_one(&statement, &[id]).await.unwrap();
                std::hint::black_box(row);
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

const BASIC_COLUMNS: &str =
    "id, url, title, published_at::text AS published_text, authors, source, section, tags, language";

async fn one_day(client: &Client, queries: usize) -> Latencies {
    let statement = client
        .prepare(&format!(
            "SELECT {BASIC_COLUMNS} FROM articles WHERE published_at >= to_timestamp($1::float8) AND published_at < to_timestamp($2::float8) ORDER BY published_at, id LIMIT 1000"
        ))
        .await
        .unwrap();
    let mut samples = Vec::new();
    let started = Instant::now();
    for q in 0..queries {
        let day = -3_755_289_600 + (q as i64 * 7_919 % 65_000) * 86_400;
        let t = Instant::now();
        client
            .query(&statement, &[&(day as f64), &((day + 86_400) as f64)])
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    Latencies::new(samples, started.elapsed())
}

async fn walk(client: &Client) -> (usize, Duration) {
    let first = client
        .prepare(&format!("SELECT {BASIC_COLUMNS}, published_at FROM articles ORDER BY published_at, id LIMIT 1000"))
        .await
        .unwrap();
    let next = client
        .prepare(&format!(
            "SELECT {BASIC_COLUMNS}, published_at FROM articles WHERE (published_at, id) > ($1, $2) ORDER BY published_at, id LIMIT 1000"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let mut count = 0;
    let mut rows = client.query(&first, &[]).await.unwrap();
    while let Some(last) = rows.last() {
        count += rows.len();
        let id: String = last.get(0);
        let at: std::time::SystemTime = last.get(9);
        rows = client.query(&next, &[&at, &id]).await.unwrap();
    }
    (count, started.elapsed())
}

fn row(name: &str, theirs: f64, ours: f64, unit: &str) -> String {
    format!(
        "{name:<40} {theirs:>12.1} {ours:>12.1} {:>10.2}   {unit}",
        ours / theirs
    )
}

/// Runs the PostgreSQL side and returns table rows next to `ours`.
///
/// # Errors
/// Why PostgreSQL could not be run (not installable, cluster would not start).
pub fn run(
    runtime: &Runtime,
    parent: &Path,
    input: &[proto::Article],
    ids: &Arc<Vec<String>>,
    seconds: f64,
    ours: &Ours,
) -> Result<Vec<String>, String> {
    let bin = postgres_bin_dir()?;
    let cluster = Cluster::start(bin, &parent.join("pg"))?;
    runtime.block_on(async {
        let client = cluster.connect().await;
        client
            .batch_execute(
                "CREATE TABLE articles (id text PRIMARY KEY, url text, title text NOT NULL, body text NOT NULL,
                   published_at timestamptz NOT NULL, authors text, source text, section text, tags text, language text);
                 CREATE INDEX articles_by_date ON articles (published_at, id);",
            )
            .await
            .unwrap();
        let n = input.len();
        let loaded = load(&client, input, ids).await;
        client.batch_execute("VACUUM ANALYZE articles").await.unwrap();
        let mut rows = vec![row(
            "ingest, batches of 1024 (articles/s)",
            n as f64 / loaded.as_secs_f64(),
            ours.ingest_rate,
            "higher is better",
        )];
        for (concurrency, our_rate, our_p99) in &ours.get {
            let mut clients = Vec::new();
            for _ in 0..*concurrency {
                clients.push(Arc::new(cluster.connect().await));
            }
            let theirs = gets(&clients, ids, seconds).await;
            rows.push(row(&format!("get by id, concurrency {concurrency} (req/s)"), theirs.rate(), *our_rate, "higher is better"));
            rows.push(format!(
                "{:<40} {:>12} {:>12} {:>10.2}   lower is better",
                format!("get by id, concurrency {concurrency} (p99 ms)"),
                ms(theirs.p99),
                ms(*our_p99),
                our_p99.as_secs_f64() / theirs.p99.as_secs_f64()
            ));
        }
        let day = one_day(&client, 200).await;
        rows.push(format!(
            "{:<40} {:>12} {:>12} {:>10.2}   lower is better",
            "one-day range, keyset (p50 ms)",
            ms(day.p50),
            ms(ours.day.p50),
            ours.day.p50.as_secs_f64() / day.p50.as_secs_f64()
        ));
        let (count, elapsed) = walk(&client).await;
        assert_eq!(count, n);
        rows.push(row("full walk, keyset 1000/page (articles/s)", count as f64 / elapsed.as_secs_f64(), ours.walk_rate, "higher is better"));
        let size: i64 = client
            .query_one("SELECT pg_total_relation_size('articles')", &[])
            .await
            .unwrap()
            .get(0);
        rows.push(row("disk per article (bytes)", size as f64 / n as f64, ours.disk_per_article, "lower is better"));
        Ok(rows)
    })
}
