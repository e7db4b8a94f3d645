//! Crash torture: the real binary is killed with SIGKILL again and again
//! while several clients create articles and update old ones (moving their
//! dates), and sometimes while it is shutting down. The archive grows with
//! every iteration, and bodies range from 1 KB to 1 MiB, so sled's tree
//! keeps splitting, its segments are cleaned and its large values go to its
//! blob files, all under the kills. After every restart (each one runs the
//! check at start, since every stop is unclean) each acknowledged article
//! must be there with its acknowledged content, or a version sent after it,
//! and a watcher of the change feed from sequence 0 must see every
//! acknowledged version and nothing that was never sent; at the end the
//! check must find every index in agreement with the log.
//!
//! `cargo test` runs a short version (4 kills). A soak run:
//! `ARCHIVE_TORTURE_ITERATIONS=500 cargo test --release --test torture -- --nocapture`;
//! `ARCHIVE_TORTURE_SEED` replays a run (the seed is printed);
//! `ARCHIVE_TORTURE_MAX_ACKS` (default 1500) bounds the acknowledgements
//! between two kills (each kill waits for 50 plus a random number below it),
//! which sets how fast the archive grows per kill. A progress line is
//! printed every 25 kills.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use article_archive::{proto, Store, StoreConfig};
use common::*;
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, StreamExt};

const CLIENTS: usize = 3;

/// A small xorshift generator: reproducible from the printed seed.
#[derive(Clone)]
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

/// Body bytes of a version: mostly a few KB, sometimes tens of KB, and one
/// in 200 up to 1 MiB (large enough, compressed, for sled's blob files).
fn body_size(rng: &mut Rng) -> usize {
    match rng.below(200) {
        0 => 256 * 1024 + rng.below(768 * 1024) as usize,
        1..=20 => 8 * 1024 + rng.below(120 * 1024) as usize,
        _ => 1024 + rng.below(7 * 1024) as usize,
    }
}

/// Version `version` of article `id`, `size` bytes of body: random letters
/// after a header, so compression does not shrink large bodies away. Its
/// date moves with every version.
fn version_of(id: &str, version: u64, size: usize) -> proto::Article {
    let seed = (version + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ id.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    let mut body = format!("{id} version {version}: ");
    body.push_str(&incompressible_body(seed, size.saturating_sub(body.len())));
    proto::Article {
        body,
        title: format!("{id} v{version}"),
        ..article(id, (version as i64 % 97) * 86_400 * 400 - 2_000_000_000)
    }
}

/// What the clients know, shared across iterations.
#[derive(Default)]
struct Ledger {
    /// Per id: the highest acknowledged version.
    acknowledged: HashMap<String, u64>,
    /// Per id: the content hash of every version sent that is not older
    /// than the acknowledged one; the stored article must be one of them.
    sent: HashMap<String, BTreeMap<u64, String>>,
    /// Per client: the ids it owns (only it writes them, so their
    /// acknowledgements come in version order).
    owned: Vec<Vec<String>>,
    /// Per id: the next version to send.
    next_version: HashMap<String, u64>,
    /// Every version ever acknowledged: (id, content hash).
    acknowledged_versions: HashSet<(String, String)>,
    /// Every version ever sent: (id, content hash).
    sent_versions: HashSet<(String, String)>,
}

type Shared = Arc<Mutex<Ledger>>;
/// How many acknowledgements have arrived in all, for the kill to wait on.
type AckCount = Arc<watch::Sender<usize>>;

/// One client's stream until the server goes away: new articles (three in
/// five) and new versions of its older ones.
async fn client_stream(
    mut client: Client,
    c: usize,
    iteration: u64,
    mut rng: Rng,
    ledger: Shared,
    count: AckCount,
) {
    let (tx, rx) = mpsc::channel(64);
    let in_flight: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    {
        let (ledger, in_flight) = (Arc::clone(&ledger), Arc::clone(&in_flight));
        tokio::spawn(async move {
            for n in 0u64.. {
                let (id, version) = {
                    let mut ledger = ledger.lock().unwrap();
                    let owned = ledger.owned[c].len() as u64;
                    let id = if owned == 0 || rng.below(5) < 3 {
                        let id = format!("c{c}-{iteration}-{n}");
                        ledger.owned[c].push(id.clone());
                        id
                    } else {
                        ledger.owned[c][rng.below(owned) as usize].clone()
                    };
                    let next = ledger.next_version.entry(id.clone()).or_insert(0);
                    let version = *next;
                    *next += 1;
                    (id, version)
                };
                let article = version_of(&id, version, body_size(&mut rng));
                let sha = sha_of(&article);
                {
                    let mut ledger = ledger.lock().unwrap();
                    ledger.sent_versions.insert((id.clone(), sha.clone()));
                    ledger
                        .sent
                        .entry(id.clone())
                        .or_default()
                        .insert(version, sha);
                }
                in_flight.lock().unwrap().push((id, version));
                if tx.send(request(article)).await.is_err() {
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
        let (id, version) = in_flight.lock().unwrap()[ack.index as usize].clone();
        assert_eq!(ack.id, id);
        let mut ledger = ledger.lock().unwrap();
        ledger.acknowledged.insert(id.clone(), version);
        let sha = ledger.sent[&id][&version].clone();
        ledger.acknowledged_versions.insert((id.clone(), sha));
        // Versions before the acknowledged one can no longer be stored.
        if let Some(sent) = ledger.sent.get_mut(&id) {
            *sent = sent.split_off(&version);
        }
        count.send_modify(|n| *n += 1);
    }
}

/// Every acknowledged article is stored at its acknowledged version or a
/// later one sent, and listed once. One BASIC walk carries every hash.
async fn verify(server: &ServerProcess, ledger: &Shared) -> usize {
    let mut client = server.client().await;
    let listed = list_all(
        &mut client,
        proto::ListArticlesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    let mut stored: HashMap<String, String> = HashMap::with_capacity(listed.len());
    for article in listed {
        let id = article.id.clone();
        assert!(
            stored.insert(article.id, article.content_sha256).is_none(),
            "{id} is listed twice"
        );
    }
    // The change feed from the start: every acknowledged version is there
    // (nothing is deleted or pruned here), nothing that was never sent,
    // sequences strictly rising, each article's revisions 1, 2, 3 … in
    // order, and its last change is what it holds now.
    let changes = all_changes(&mut client, Default::default()).await;
    assert!(changes.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let mut revisions: HashMap<&str, u64> = HashMap::new();
    let mut fed: HashSet<(String, String)> = HashSet::with_capacity(changes.len());
    let mut newest: HashMap<&str, &str> = HashMap::new();
    for change in &changes {
        let article = change
            .article
            .as_ref()
            .expect("only CREATED and UPDATED here");
        let revision = revisions.entry(change.id.as_str()).or_insert(0);
        *revision += 1;
        assert_eq!(
            article.revision, *revision,
            "{}: revisions in order",
            change.id
        );
        fed.insert((change.id.clone(), article.content_sha256.clone()));
        newest.insert(change.id.as_str(), article.content_sha256.as_str());
    }
    let ledger = ledger.lock().unwrap();
    for version in &ledger.acknowledged_versions {
        assert!(
            fed.contains(version),
            "acknowledged {version:?} is not in the feed"
        );
    }
    for version in &fed {
        assert!(
            ledger.sent_versions.contains(version),
            "{version:?} is in the feed but was never sent"
        );
    }
    for (id, sha) in &stored {
        assert_eq!(
            newest.get(id.as_str()),
            Some(&sha.as_str()),
            "{id}: the feed's last change is what is stored"
        );
    }
    for (id, version) in &ledger.acknowledged {
        let sha = stored
            .get(id)
            .unwrap_or_else(|| panic!("{id} (acknowledged at version {version}) is missing"));
        let candidates = &ledger.sent[id];
        assert!(
            candidates.range(version..).any(|(_, sent)| sent == sha),
            "{id}: stored content is not version {version} or a later one sent"
        );
    }
    ledger.acknowledged_versions.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_while_the_archive_grows_loses_nothing_acknowledged() {
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
    let max_acks: u64 = std::env::var("ARCHIVE_TORTURE_MAX_ACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
        .max(1);
    println!(
        "torture: {iterations} iterations, ARCHIVE_TORTURE_SEED={seed}, \
         ARCHIVE_TORTURE_MAX_ACKS={max_acks}"
    );
    let started = std::time::Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ledger: Shared = Arc::new(Mutex::new(Ledger {
        owned: vec![Vec::new(); CLIENTS],
        ..Ledger::default()
    }));
    let count: AckCount = Arc::new(watch::channel(0).0);
    let mut verified = 0usize;

    for iteration in 0..iterations {
        let mut server = ServerProcess::start(&data, &[]);
        verified += verify(&server, &ledger).await;

        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let client = server.client().await;
            let client_rng = Rng(rng.next() | 1);
            let (ledger, count) = (Arc::clone(&ledger), Arc::clone(&count));
            clients.push(tokio::spawn(client_stream(
                client, c, iteration, client_rng, ledger, count,
            )));
        }
        // Let a random amount of work be acknowledged, then kill: mid-ingest,
        // or (one time in three) after SIGTERM, while shutting down.
        let target = *count.borrow() + 50 + rng.below(max_acks) as usize;
        tokio::time::timeout(
            Duration::from_secs(300),
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
        if (iteration + 1) % 25 == 0 {
            let ledger = ledger.lock().unwrap();
            println!(
                "torture: {} kills after {:.0} s; {} articles and {} versions acknowledged",
                iteration + 1,
                started.elapsed().as_secs_f64(),
                ledger.acknowledged.len(),
                ledger.acknowledged_versions.len()
            );
        }
    }

    let server = ServerProcess::start(&data, &[]);
    verified += verify(&server, &ledger).await;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(60)).0.success());
    let report = Store::open(&StoreConfig::new(&data))
        .unwrap()
        .check()
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.articles, report.date_entries);
    assert_eq!(report.revision_entries, report.records - report.articles);
    println!(
        "torture: {iterations} kills survived in {:.0} s; {verified} acknowledged versions verified over \
         the restarts (each restart: all of them, in the feed and stored); {} articles, {} \
         records (stored versions)",
        started.elapsed().as_secs_f64(),
        report.articles,
        report.records
    );
}
