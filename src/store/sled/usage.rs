//! What a server's metrics read from the engine: its size on disk, the free
//! space, the writer's queue, the live articles; and how metrics are
//! attached to it. Kept apart from the engine's work so the few lines that
//! record (in the writer and in `submit`) are all it adds there.

use std::{path::Path, sync::Arc};

use super::{index::IdState, writer, SledStore};
use crate::{
    error::Result,
    metrics::{BatchOutcomes, Metrics},
    store::{StoreUsage, WriteOutcome},
};

impl SledStore {
    /// What the store holds and waits for now. A few `stat` calls and a
    /// read of the data directory (the record log's segments are 256 MiB
    /// each, so they are few); no sled read.
    pub fn usage(&self) -> StoreUsage {
        let config = &self.shared.config;
        let record_log_bytes = allocated_bytes(self.shared.log.dir(), 0);
        let all_bytes = allocated_bytes(&config.path, 0);
        let (queued_operations, queued_bytes) = match &self.queue {
            Some(queue) => {
                let queued_kib = (self.queued_kib_limit as usize)
                    .saturating_sub(self.queued_kib.available_permits());
                (
                    queue.max_capacity().saturating_sub(queue.capacity()),
                    queued_kib * 1024,
                )
            }
            None => (0, 0),
        };
        StoreUsage {
            record_log_bytes,
            other_bytes: all_bytes.saturating_sub(record_log_bytes),
            free_bytes: writer::available_bytes(&config.path).ok(),
            min_free_bytes: config.min_free_bytes,
            queued_operations: queued_operations as u64,
            queued_bytes: queued_bytes as u64,
        }
    }

    /// Live articles: the sum of the per-year counters of the `counts`
    /// index, which the writer keeps in the same transaction as every
    /// article (a deletion takes its article out), so a few hundred reads
    /// instead of the whole `ids` index (which took 0.7–1.2 s for 300,000
    /// articles). A damaged counter (which `check` reports and `check
    /// --repair` rebuilds) must not keep a server from starting with
    /// metrics: then the `ids` index is counted instead, with a warning.
    ///
    /// # Errors
    /// [`crate::Error::Storage`] when sled cannot be read.
    pub fn count_articles(&self) -> Result<u64> {
        match super::queries::live_articles(&self.shared.trees.counts) {
            Err(crate::Error::Corrupt { key, reason }) => {
                tracing::warn!(%key, %reason, "a damaged article counter; counting the ids index instead (run `check`)");
                let mut live = 0;
                for entry in super::queries::all_ids(&self.shared.trees) {
                    let (_, value) = entry?;
                    if matches!(IdState::decode(&value), Ok(IdState::Live(_))) {
                        live += 1;
                    }
                }
                Ok(live)
            }
            counted => counted,
        }
    }

    /// Makes the writer and submitters record into `metrics` from now on,
    /// starting the live-article gauge at [`Self::count_articles`]: the
    /// writer, the only one that changes the indexes, then adds what each
    /// batch created and deleted. So no scrape has to read the index. Call it
    /// before writes begin (a batch committed during the count may be
    /// counted twice or not at all). A store takes metrics once; later
    /// calls change nothing.
    ///
    /// # Errors
    /// [`crate::Error::Storage`] when the index cannot be read.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) -> Result<()> {
        if self.shared.metrics.get().is_some() {
            return Ok(());
        }
        metrics.set_articles(self.count_articles()?);
        let _ = self.shared.metrics.set(metrics);
        Ok(())
    }
}

/// What a committed batch did, counted for the metrics.
pub(super) fn tally(
    batch: &[writer::WriteRequest],
    outcomes: &[Result<WriteOutcome>],
) -> BatchOutcomes {
    crate::store::tally_outcomes(batch.iter().zip(outcomes).map(|(request, outcome)| {
        let body_bytes = match &request.op {
            writer::Op::Put(prepared) => prepared.body_bytes,
            writer::Op::Delete { .. } => 0,
        };
        (body_bytes, outcome)
    }))
}

/// Bytes allocated on disk (as `du` counts them) to the files under `dir`;
/// what cannot be read counts as nothing. Symbolic links are not followed,
/// and the walk stops a few levels down (sled's `blobs/` is one level).
fn allocated_bytes(dir: &Path, depth: usize) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() && depth < 3 {
            total += allocated_bytes(&entry.path(), depth + 1);
        } else if meta.is_file() {
            // st_blocks counts 512-byte units whatever the block size.
            total += meta.blocks() * 512;
        }
    }
    total
}
