//! `--interface-cost`: what the storage interface costs. The same GetArticle
//! reads (the store's `get_revision`, current revision) in this process,
//! once straight on the sled engine (`SledStore`, a synchronous call) and
//! once through `Store` (the enum over the engines, an `async fn`, awaited
//! on a current-thread runtime), on the same archive, alternating A B A B.

use std::time::{Duration, Instant};

use article_archive::{
    article::{Article, ArticleId},
    store::sled::SledStore,
    Store, StoreConfig,
};

use crate::corpus::article;

const ARTICLES: u64 = 20_000;
const GETS: u64 = 400_000;
const ROUNDS: usize = 5;

/// Opens with `open`, waiting while the previous handle's background
/// thread still holds the directory's lock.
fn open_when_free<T>(open: impl Fn() -> article_archive::Result<T>) -> T {
    loop {
        match open() {
            Ok(store) => return store,
            Err(article_archive::Error::DataDirLocked { .. }) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("opening the archive: {e}"),
        }
    }
}

pub fn run() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let mut ids = Vec::new();
    {
        let store = Store::open(&config).unwrap();
        runtime.block_on(async {
            let mut pending = Vec::new();
            for i in 0..ARTICLES as usize {
                let article = Article::from_proto(article(i)).unwrap();
                ids.push(article.id().clone());
                pending.push(store.submit(article).await.unwrap());
            }
            for write in pending {
                write.outcome().await.unwrap();
            }
        });
        runtime.block_on(store.close()).unwrap();
    }
    let pick = |k: u64| -> &ArticleId { &ids[((k * 7919) % ARTICLES) as usize] };
    println!(
        "Interface cost: {GETS} reads of the current revision of random ids of {ARTICLES} articles, \
         in this process; straight on the sled engine (sync) against through Store (enum, async), \
         A B A B"
    );
    println!("round  direct ns/get  Store ns/get  Store / direct");
    for round in 1..=ROUNDS {
        let direct = open_when_free(|| SledStore::open(&config));
        let started = Instant::now();
        for k in 0..GETS {
            std::hint::black_box(direct.get_revision(pick(k), 0).unwrap());
        }
        let direct_ns = started.elapsed().as_nanos() as f64 / GETS as f64;
        drop(direct);
        let store = open_when_free(|| Store::open(&config));
        let started = Instant::now();
        runtime.block_on(async {
            for k in 0..GETS {
                std::hint::black_box(store.get_revision(pick(k), 0).await.unwrap());
            }
        });
        let store_ns = started.elapsed().as_nanos() as f64 / GETS as f64;
        runtime.block_on(store.close()).unwrap();
        println!(
            "{round:>5}  {direct_ns:>13.0}  {store_ns:>12.0}  {:>14.3}",
            store_ns / direct_ns
        );
    }
}
