//! Converting a format 1 data directory to format 2, in place and
//! crash-safely.
//!
//! Format 1 kept `articles` (id → record) and `by_date` (date key → empty);
//! format 2 keeps the trees of [`super`]. The two sets of names do not
//! overlap, so both live in the same sled database during the conversion:
//!
//! 1. leftovers of an earlier, interrupted conversion are dropped (the
//!    format 2 trees and record log, which are not yet the archive);
//! 2. a compression dictionary is trained from a sample of the articles;
//! 3. every sound format 1 record is written as revision 1 of its article,
//!    with its own `ingested_at`, through the writer's commit (batches of
//!    1024, each one transaction); a damaged record is copied to the
//!    `quarantine` tree, byte for byte, as `check --repair` would;
//! 4. flush and sync, then **the commit point**: `meta/format` becomes `2`
//!    in one write, flushed and synced;
//! 5. the format 1 trees are dropped.
//!
//! A kill before step 4 leaves format 1 intact (its trees were only read)
//! and a partial format 2 that the next run drops; a kill after it leaves a
//! complete format 2, and opening it drops any format 1 tree still there.
//! The page-token key stays, so tokens issued before keep working.

use std::{path::Path, time::Instant};

use tracing::info;

use super::{
    codec::{self, Codec, Kind},
    dictionary_key, format1,
    log::RecordLog,
    open_sled,
    writer::{self, WriterState},
    Prepared, Trees, DICTS_TREE, FORMAT_KEY, FORMAT_VERSION, LOG_TAIL_KEY, META_TREE,
    SEQUENCE_HIGH_KEY,
};
use crate::{
    article::{ArticleId, StoredArticle},
    error::{Error, Result},
    store::StoreConfig,
};

const FORMAT_1: &[u8] = b"1";
/// Format 1's trees, dropped once the conversion has committed.
const FORMAT_1_TREES: [&str; 2] = ["articles", "by_date"];
/// Where format 1 and the conversion put damaged records (keyed by id).
const FORMAT_1_QUARANTINE: &str = "quarantine";
/// Format 2's trees, dropped when an interrupted conversion starts again.
const FORMAT_2_TREES: [&str; 11] = [
    super::IDS_TREE,
    super::DATES_TREE,
    super::REVISIONS_TREE,
    DICTS_TREE,
    super::QUARANTINED_RECORDS_TREE,
    super::CHECKPOINTS_TREE,
    super::queries::SLED_QUERY_TREES[0],
    super::queries::SLED_QUERY_TREES[1],
    super::queries::SLED_QUERY_TREES[2],
    super::runs::QUERY_LOG_TREE,
    super::queries::COUNTS_TREE,
];
/// Articles converted per transaction.
const BATCH: usize = 1024;

/// Stops a format 2 open on a directory that holds an older format.
///
/// # Errors
/// [`Error::UpgradeNeeded`] for format 1; [`Error::Corrupt`] for a format
/// this binary does not know.
pub(super) fn refuse_older_formats(db: &sled::Db, path: &Path) -> Result<()> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_KEY)? {
        None => Ok(()),
        Some(format) if format.as_ref() == FORMAT_VERSION => Ok(()),
        Some(format) if format.as_ref() == FORMAT_1 => Err(Error::UpgradeNeeded {
            path: path.to_path_buf(),
        }),
        Some(other) => Err(Error::Corrupt {
            key: format!("{META_TREE}/{FORMAT_KEY}"),
            reason: format!(
                "data format {:?} is newer than this binary knows (2)",
                String::from_utf8_lossy(&other)
            ),
        }),
    }
}

/// Drops format 1 trees left behind by a conversion that committed and was
/// stopped before it could drop them.
pub(super) fn drop_leftovers(db: &sled::Db) -> Result<()> {
    for name in FORMAT_1_TREES {
        if db
            .tree_names()
            .iter()
            .any(|t| t.as_ref() == name.as_bytes())
        {
            info!(
                tree = name,
                "dropping a format 1 tree left by a finished upgrade"
            );
            db.drop_tree(name)?;
        }
    }
    Ok(())
}

/// What [`upgrade`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpgradeReport {
    /// The format the directory held.
    pub from_format: u8,
    /// Articles converted.
    pub converted: u64,
    /// Damaged format 1 records, copied to the `quarantine` tree.
    pub quarantined: u64,
    /// Whether a compression dictionary was trained.
    pub dictionary: bool,
    /// Seconds taken.
    pub seconds: f64,
}

/// Converts the directory of `config` to format 2 (a no-op for a format 2
/// directory). Blocking; no server may be running on it.
///
/// # Errors
/// [`Error::DataDirLocked`] when a server has it open, [`Error::Storage`]
/// when sled fails, [`Error::DataDir`] when it is not an archive.
pub fn upgrade(config: &StoreConfig) -> Result<UpgradeReport> {
    let started = Instant::now();
    if !config.path.join("db").exists() {
        return Err(Error::DataDir {
            path: config.path.clone(),
            doing: "looking for an archive in it",
            source: std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no archive in this directory",
            )),
        });
    }
    let db = open_sled(config)?;
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_KEY)? {
        Some(format) if format.as_ref() == FORMAT_1 => {}
        _ => {
            refuse_older_formats(&db, &config.path)?;
            drop_leftovers(&db)?;
            return Ok(UpgradeReport {
                from_format: 2,
                seconds: started.elapsed().as_secs_f64(),
                ..UpgradeReport::default()
            });
        }
    }
    for name in FORMAT_2_TREES {
        db.drop_tree(name)?;
    }
    meta.remove(SEQUENCE_HIGH_KEY)?;
    meta.remove(LOG_TAIL_KEY)?;
    meta.remove(super::queries::SLED_QUERY_INDEXES_KEY)?;
    meta.remove(super::runs::MANIFEST_KEY)?;
    db.flush()?;
    RecordLog::remove_all(&config.path)?;
    super::runs::RunIndex::remove_all(&config.path)?;
    let log = RecordLog::open(&config.path, None)?;
    let articles = db.open_tree(FORMAT_1_TREES[0])?;
    let quarantine = db.open_tree(FORMAT_1_QUARANTINE)?;
    let trees = Trees::open(db.clone(), &config.path)?;
    // Empty: the conversion's commits fill them, and write runs as they go.
    trees.query.rebuild(std::iter::empty(), |_, _, _| true)?;
    let dir = std::fs::File::open(&config.path).map_err(|e| Error::DataDir {
        path: config.path.clone(),
        doing: "opening it to sync its filesystem",
        source: std::sync::Arc::new(e),
    })?;
    let codec = Codec::default();
    let mut report = UpgradeReport {
        from_format: 1,
        ..UpgradeReport::default()
    };

    // A dictionary from a sample spread over the archive, as the writer
    // would train one; too few articles and there is none.
    let total = articles.len() as u64;
    if total >= config.dictionary_after.max(1) {
        let step = (total / 4000).max(1) as usize;
        let samples: Vec<_> = articles
            .iter()
            .step_by(step)
            .filter_map(|entry| entry.ok())
            .filter_map(|(key, value)| sound(&key, &value))
            .collect();
        let content: Vec<_> = samples
            .iter()
            .map(|stored| super::record::plain_content(&stored.content))
            .collect();
        if let Ok(dictionary) = codec::train(Kind::Content, &content) {
            trees
                .dicts
                .insert(dictionary_key(Kind::Content, 1), dictionary.as_slice())?;
            codec.add_dictionary(Kind::Content, 1, &dictionary);
            report.dictionary = true;
        }
    }

    let mut state = WriterState {
        next_sequence: 1,
        keep_revisions: 0,
    };
    let mut batch = Vec::with_capacity(BATCH);
    for entry in &articles {
        let (key, value) = entry?;
        match sound(&key, &value) {
            Some(stored) => batch.push(prepared(&codec, &stored)),
            None => {
                quarantine.insert(&key, value)?;
                report.quarantined += 1;
            }
        }
        if batch.len() == BATCH {
            report.converted += convert(&trees, &log, &codec, &mut state, &batch)?;
            batch.clear();
        }
    }
    report.converted += convert(&trees, &log, &codec, &mut state, &batch)?;
    trees.db.flush()?;
    writer::sync_filesystem(&dir)?;

    // The writer's commits kept the query indexes with every article (in
    // runs and in `query_log`).
    // The commit point.
    trees.meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
    trees.db.flush()?;
    writer::sync_filesystem(&dir)?;

    drop_leftovers(&trees.db)?;
    trees.db.flush()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A format 1 record that decodes and matches its hash.
fn sound(key: &[u8], value: &[u8]) -> Option<StoredArticle> {
    let id = ArticleId::parse("id", std::str::from_utf8(key).ok()?).ok()?;
    let stored = format1::decode(&id, value).ok()?;
    (stored.content.sha256() == stored.content_sha256).then_some(stored)
}

fn prepared(codec: &Codec, stored: &StoredArticle) -> Prepared {
    let article = crate::article::Article::from_stored(stored);
    let mut prepared = Prepared::new(codec, &article);
    prepared.ingested_at = Some(stored.ingested_at);
    prepared
}

/// Commits one batch of converted articles; every one is new (ids are
/// unique in format 1).
fn convert(
    trees: &Trees,
    log: &RecordLog,
    codec: &Codec,
    state: &mut WriterState,
    batch: &[Prepared],
) -> Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let ops: Vec<writer::Op> = batch.iter().cloned().map(writer::Op::Put).collect();
    let refs: Vec<&writer::Op> = ops.iter().collect();
    let outcomes = writer::commit(
        trees,
        log,
        codec,
        state,
        &refs,
        crate::article::Timestamp::now(),
    )?;
    outcomes.into_iter().try_fold(0, |n, outcome| {
        outcome?;
        Ok(n + 1)
    })
}
