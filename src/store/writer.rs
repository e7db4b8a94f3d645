//! The single writer: group commit, flush, then acknowledge.
//!
//! Every write goes through one thread that owns the write side of the store.
//! It takes whatever articles are queued (up to a batch limit), decides each
//! outcome against the stored record (or an earlier article of the same
//! batch), applies the record and index changes of the whole batch in one
//! sled transaction over both trees, flushes, and only then answers. One
//! writer means no write conflicts, a total order of updates to an id, and
//! one fsync for many articles. It is a plain thread because every step
//! blocks on sled.

use std::{collections::HashMap, convert::Infallible};

use sled::{
    transaction::{ConflictableTransactionError, TransactionError},
    Transactional,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use super::{keys, record, Trees};
use crate::{
    article::{Article, ArticleId, Timestamp},
    error::{Error, Result},
};

/// What the writer did with one article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The id was new.
    Created,
    /// The id was known with other content; the record was replaced.
    Updated,
    /// The id was known with the same content; nothing was written.
    Unchanged,
}

/// One article waiting for the writer, and where to send its outcome.
pub(super) struct WriteRequest {
    pub article: Article,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// Bounds on one group commit.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most articles in one commit.
    pub max_articles: usize,
    /// Most article bytes (title and body) in one commit; a batch stops
    /// growing once it passes this.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_articles: 1024,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Runs until every sender is dropped, then returns after the last batch.
pub(super) fn run(trees: Trees, mut queue: mpsc::Receiver<WriteRequest>, limits: BatchLimits) {
    let mut batch = Vec::with_capacity(limits.max_articles);
    while let Some(first) = queue.blocking_recv() {
        let mut bytes = approximate_size(&first.article);
        batch.push(first);
        while batch.len() < limits.max_articles && bytes < limits.max_bytes {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += approximate_size(&next.article);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let articles: Vec<&Article> = batch.iter().map(|w| &w.article).collect();
        let result = commit(&trees, &articles);
        if let Err(e) = &result {
            error!(error = %e, articles = batch.len(), "group commit failed; nothing in it was acknowledged");
        } else {
            debug!(articles = batch.len(), bytes, "group commit flushed");
        }
        for (i, request) in batch.drain(..).enumerate() {
            let answer = match &result {
                Ok(outcomes) => Ok(outcomes[i]),
                Err(e) => Err(e.clone()),
            };
            // A closed receiver means the client went away; the write stands.
            let _ = request.reply.send(answer);
        }
    }
}

fn approximate_size(article: &Article) -> usize {
    article.content().body.len() + article.content().title.len()
}

/// Applies one batch atomically and flushes it. Returns the outcome of each
/// article in order.
pub(super) fn commit(trees: &Trees, batch: &[&Article]) -> Result<Vec<WriteOutcome>> {
    let ingested_at = Timestamp::now();
    // The state of each id touched so far in this batch, so a second article
    // with the same id is compared with the first, not with the disk.
    let mut latest: HashMap<&ArticleId, record::RecordHeader> = HashMap::new();
    let mut records = sled::Batch::default();
    let mut index = sled::Batch::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut changed = false;

    for article in batch {
        let id = article.id();
        let content = article.content();
        let sha = content.sha256();
        let previous = match latest.get(id) {
            Some(header) => Some(*header),
            None => match trees.articles.get(id.as_str())? {
                Some(bytes) => {
                    Some(
                        record::decode_header(&bytes).map_err(|reason| Error::Corrupt {
                            key: format!("articles/{id}"),
                            reason,
                        })?,
                    )
                }
                None => None,
            },
        };
        let outcome = match previous {
            Some(old) if old.content_sha256 == sha => WriteOutcome::Unchanged,
            Some(old) => {
                index.remove(keys::date_key(old.published_at, id));
                WriteOutcome::Updated
            }
            None => WriteOutcome::Created,
        };
        if outcome != WriteOutcome::Unchanged {
            records.insert(id.as_str(), record::encode(content, sha, ingested_at));
            // Inserted after any removal above, so moving an article to the
            // same date keeps its entry (a batch keeps the last write per key).
            index.insert(keys::date_key(content.published_at, id), &[][..]);
            latest.insert(
                id,
                record::RecordHeader {
                    published_at: content.published_at,
                    content_sha256: sha,
                },
            );
            changed = true;
        }
        outcomes.push(outcome);
    }

    if changed {
        // The closure only applies prepared batches, so sled may retry it.
        (&trees.articles, &trees.by_date)
            .transaction(|(articles, by_date)| {
                articles.apply_batch(&records)?;
                by_date.apply_batch(&index)?;
                Ok::<(), ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => Error::from(e),
                TransactionError::Abort(never) => match never {},
            })?;
    }
    // Flush even when nothing changed: an UNCHANGED answer promises that the
    // stored version is durable, and an earlier failed flush may have left it
    // only in memory.
    trees.db.flush()?;
    Ok(outcomes)
}
