//! Crash torture: the real binary is killed with SIGKILL again and again
//! while several clients create articles and move them between dates, and
//! sometimes while it is shutting down. After every restart each
//! acknowledged article must be there with its acknowledged content (or a
//! later version that was written but not yet acknowledged), and the index
//! must hold exactly one entry per record, at its date.
//!
//! `cargo test` runs a short version (4 kills). A soak run:
//! `ARCHIVE_TORTURE_ITERATIONS=200 cargo test --release --test torture -- --nocapture`;
//! `ARCHIVE_TORTURE_SEED` replays a run (the seed is printed).

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use article_archive::{proto, Store, StoreConfig};
use common::*;
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, StreamExt};

const CLIENTS: usize = 3;
const IDS_PER_CLIENT: usize = 100;

/// A small xorshift generator: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Version `version` of article `id`: its date moves with every version.
fn version_of(id: &str, version: u64) -> proto::Article {
    proto::Article {
        body: format!("{id} version {version}: {}", "text ".repeat(200)),
        title: format!("{id} v{version}"),
        ..article(id, (version as i64 % 97) * 86_400 * 400 - 2_000_000_000)
    }
}

/// What the clients have seen acknowledged: per id, the highest version.
type Acknowledged = Arc<Mutex<HashMap<String, u64>>>;
/// How many acknowledgements have arrived in all, for the kill to wait on.
type AckCount = Arc<watch::Sender<usize>>;

/// One client's stream: versions `from..` of its own ids, round robin, until
/// the server goes away. Each id is written by one client only, so the
/// order of its acknowledgements is the order of its versions.
async fn client_stream(
    mut client: Client,
    c: usize,
    first_version: u64,
    acknowledged: Acknowledged,
    count: AckCount,
) {
    let (tx, rx) = mpsc::channel(256);
    let ids: Vec<String> = (0..IDS_PER_CLIENT)
        .map(|i| format!("c{c}-{i:03}"))
        .collect();
    let sent: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for n in 0u64.. {
                let id = &ids[(n as usize) % ids.len()];
                let version = first_version + n / ids.len() as u64;
                sent.lock().unwrap().push((id.clone(), version));
                let request = request(version_of(id, version));
                if tx.send(request).await.is_err() {
                    return;
                }
            }
        });
    }
    let Ok(response) = client.ingest_articles(ReceiverStream::new(rx)).await else {
        return;
    };
    let mut responses = response.into_inner();
    while let Some(Ok(ack)) = responses.next().await {
        let (id, version) = sent.lock().unwrap()[ack.index as usize].clone();
        assert_eq!(ack.id, id);
        acknowledged.lock().unwrap().insert(id, version);
        count.send_modify(|n| *n += 1);
    }
}

/// Every acknowledged article is stored at its acknowledged version or a
/// later one, and the index matches the records exactly.
async fn verify(server: &ServerProcess, acknowledged: &HashMap<String, u64>, latest_sent: u64) {
    let mut client = server.client().await;
    for (id, &version) in acknowledged {
        let stored = client
            .get_article(proto::GetArticleRequest { id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("{id} (acknowledged at version {version}) is missing: {e}"))
            .into_inner()
            .article
            .unwrap();
        let found =
            (version..=latest_sent).find(|v| sha_of(&version_of(id, *v)) == stored.content_sha256);
        assert!(
            found.is_some(),
            "{id}: stored content is not version {version} or later"
        );
        assert_eq!(
            stored.published_at,
            version_of(id, found.unwrap()).published_at,
            "{id}"
        );
    }
    let listed = list_all(
        &mut client,
        proto::ListArticlesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    let mut ids: Vec<_> = listed.iter().map(|a| a.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), listed.len(), "an article is listed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_during_creates_updates_and_shutdown_loses_nothing_acknowledged() {
    let iterations: u64 = std::env::var("ARCHIVE_TORTURE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("ARCHIVE_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("torture: {iterations} iterations, ARCHIVE_TORTURE_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acknowledged: Acknowledged = Arc::default();
    let count: AckCount = Arc::new(watch::channel(0).0);
    let mut verified = 0usize;

    for iteration in 0..iterations {
        let mut server = ServerProcess::start(&data, &[]);
        let first_version = iteration * 1_000;
        let snapshot = acknowledged.lock().unwrap().clone();
        verify(&server, &snapshot, first_version).await;
        verified += acknowledged.lock().unwrap().len();

        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let client = server.client().await;
            let (acknowledged, count) = (Arc::clone(&acknowledged), Arc::clone(&count));
            clients.push(tokio::spawn(client_stream(
                client,
                c,
                first_version,
                acknowledged,
                count,
            )));
        }
        // Let a random amount of work be acknowledged (versions move dates
        // from the second pass over the ids on), then kill: mid-ingest, or
        // (one time in three) after SIGTERM, while shutting down.
        let target = *count.borrow() + 50 + rng.below(1_500) as usize;
        tokio::time::timeout(
            Duration::from_secs(120),
            count.subscribe().wait_for(|n| *n >= target),
        )
        .await
        .expect("the clients make progress")
        .unwrap();
        if rng.below(3) == 0 {
            server.signal("TERM");
            tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for client in clients {
            client.await.unwrap();
        }
    }

    let server = ServerProcess::start(&data, &[]);
    let acknowledged = acknowledged.lock().unwrap().clone();
    verify(&server, &acknowledged, iterations * 1_000).await;
    verified += acknowledged.len();
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
    let report = Store::open(&StoreConfig::new(&data))
        .unwrap()
        .check()
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, report.index_entries);
    println!("torture: {iterations} kills survived, {verified} acknowledged articles verified, {} records", report.records);
}
