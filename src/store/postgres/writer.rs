//! The replica's writer: takes what is queued as one batch, applies it in
//! one transaction under the feed head's lock, and answers every operation
//! once the transaction has committed (PostgreSQL has made it durable:
//! `synchronous_commit` as the server sets it, on by default).

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio_postgres::{types::ToSql, Transaction};

use super::{db_error, pool_error, to_i64, Op};
use crate::{
    article::{ArticleContent, ArticleId, Timestamp},
    error::{Error, Result},
    store::{calendar::Interval, keys, url_key::UrlKey, BatchLimits, WriteHealth, WriteOutcome},
};

/// One queued operation and where its outcome goes.
pub(crate) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
    /// Its share of the queue's byte budget, given back once answered.
    pub _permit: OwnedSemaphorePermit,
}

/// What the writer works with.
pub(super) struct Writer {
    pub pool: Pool,
    /// Set once metrics are on: each committed batch is counted there.
    pub metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::Metrics>>>,
    pub limits: BatchLimits,
    pub keep_revisions: u64,
    pub health: Arc<watch::Sender<WriteHealth>>,
    pub durable: Arc<watch::Sender<u64>>,
}

/// Attempts of one batch when the database is unreachable or a transaction
/// conflicts, with the backoff doubling from [`FIRST_BACKOFF`]: about 1.6 s
/// in all, then the batch fails UNAVAILABLE (or ABORTED) and its clients
/// retry.
const ATTEMPTS: u32 = 7;
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// Rows in one multi-row INSERT (20 parameters each, well under
/// PostgreSQL's 65,535).
const INSERT_ROWS: usize = 500;

/// Runs until every sender is gone and the queue is empty.
pub(super) async fn run(writer: Writer, mut queue: mpsc::Receiver<Request>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = op_bytes(&first.op);
        let mut batch = vec![first];
        while batch.len() < writer.limits.max_articles && bytes < writer.limits.max_bytes {
            match queue.try_recv() {
                Ok(request) => {
                    bytes += op_bytes(&request.op);
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<&Op> = batch.iter().map(|r| &r.op).collect();
        let started = std::time::Instant::now();
        match writer.commit_with_retries(&ops).await {
            Ok((outcomes, head)) => {
                if let Some(metrics) = writer.metrics.get() {
                    metrics.batch_committed(
                        batch.len(),
                        started.elapsed(),
                        &tally(&batch, &outcomes),
                    );
                }
                writer.health.send_if_modified(|health| {
                    let changed = *health != WriteHealth::Writable;
                    *health = WriteHealth::Writable;
                    changed
                });
                writer.durable.send_if_modified(|durable| {
                    let newer = head > *durable;
                    *durable = (*durable).max(head);
                    newer
                });
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                if let Error::DatabaseUnavailable(reason) = &e {
                    let reason = reason.clone();
                    writer.health.send_replace(WriteHealth::Unreachable(reason));
                }
                tracing::warn!(error = %e, operations = batch.len(), "a batch failed; nothing of it was stored");
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// What a committed batch did, for the metrics.
fn tally(batch: &[Request], outcomes: &[Result<WriteOutcome>]) -> crate::metrics::BatchOutcomes {
    crate::store::tally_outcomes(batch.iter().zip(outcomes).map(|(request, outcome)| {
        let body_bytes = match &request.op {
            Op::Put { content, .. } => content.body.len() as u64,
            Op::Delete { .. } => 0,
        };
        (body_bytes, outcome)
    }))
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { content, .. } => content.body.len() + content.title.len() + 512,
        Op::Delete { reason, .. } => reason.len() + 64,
    }
}

impl Writer {
    /// Commits the batch, retrying a transaction that conflicted or lost
    /// its connection. A connection lost during COMMIT leaves it unknown
    /// whether the batch committed; the retry then finds its versions
    /// stored (UNCHANGED) or its deletions done (the id already deleted),
    /// so nothing is stored twice.
    async fn commit_with_retries(&self, ops: &[&Op]) -> Result<(Vec<Result<WriteOutcome>>, u64)> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = async {
                let mut client = self.pool.get().await.map_err(pool_error)?;
                let tx = client.transaction().await.map_err(db_error)?;
                let (outcomes, head) =
                    commit(&tx, ops, Timestamp::now(), self.keep_revisions).await?;
                tx.commit().await.map_err(db_error)?;
                Ok((outcomes, head))
            }
            .await;
            match result {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "retrying a batch");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A conflict (serialization failure, deadlock) or a lost connection: the
/// transaction did not commit (or may not have), and running it again is
/// safe.
fn retryable(e: &Error) -> bool {
    match e {
        Error::DatabaseUnavailable(_) => true,
        Error::Database(inner) => matches!(
            inner.code(),
            Some(code) if *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                || *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
        ),
        _ => false,
    }
}

/// What the batch knows of one id as it goes.
#[derive(Clone, Copy)]
enum State {
    Absent,
    Live {
        revision: u64,
        sequence: i64,
        sha: [u8; 32],
    },
    Deleted {
        sequence: i64,
        at: Timestamp,
        allow_reingest: bool,
    },
}

struct IdWork {
    state: State,
    /// Had a row in `articles` before the batch.
    had_live_row: bool,
    /// The UTC day of that row's publication.
    old_day: Option<i64>,
    /// Had a tombstone before the batch.
    had_tombstone: bool,
    /// Got a new version or was deleted in the batch.
    touched: bool,
    /// Deleted in the batch: every row it had before goes.
    erase: bool,
    /// Revisions below this are pruned (--keep-revisions); 0: none.
    prune_below: u64,
}

/// A version the batch stores.
struct NewVersion<'a> {
    id: &'a ArticleId,
    content: &'a ArticleContent,
    sha: &'a [u8; 32],
    revision: u64,
    sequence: i64,
    ingested_at: Timestamp,
    /// False once a later deletion or pruning in the batch removed it.
    kept: bool,
}

/// One row of `changes`.
struct ChangeRow<'a> {
    sequence: i64,
    kind: i16,
    id: &'a ArticleId,
    revision: u64,
    at: Timestamp,
    reason: &'a str,
}

/// Applies `ops` in `tx` (not committed); returns each outcome and the head
/// after it.
async fn commit(
    tx: &Transaction<'_>,
    ops: &[&Op],
    now: Timestamp,
    keep_revisions: u64,
) -> Result<(Vec<Result<WriteOutcome>>, u64)> {
    // First, so that writers on every replica queue here and take their
    // sequence numbers in commit order.
    let head: i64 = tx
        .query_one(
            "UPDATE feed_head SET last_sequence = last_sequence WHERE singleton \
             RETURNING last_sequence",
            &[],
        )
        .await
        .map_err(db_error)?
        .get(0);

    let mut ids: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            Op::Put { id, .. } | Op::Delete { id, .. } => id.as_str(),
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut work: HashMap<String, IdWork> = ids
        .iter()
        .map(|id| {
            (
                (*id).to_owned(),
                IdWork {
                    state: State::Absent,
                    had_live_row: false,
                    old_day: None,
                    had_tombstone: false,
                    touched: false,
                    erase: false,
                    prune_below: 0,
                },
            )
        })
        .collect();
    for row in tx
        .query(
            "SELECT id, revision, sequence, content_sha256, published_day FROM articles \
             WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(db_error)?
    {
        let id: String = row.get(0);
        let sha: Vec<u8> = row.get(3);
        if let Some(w) = work.get_mut(&id) {
            w.had_live_row = true;
            w.old_day = Some(row.get(4));
            w.state = State::Live {
                revision: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                sequence: row.get(2),
                sha: sha.try_into().map_err(|_| Error::Corrupt {
                    key: format!("articles/{id}"),
                    reason: "content_sha256 is not 32 bytes".into(),
                })?,
            };
        }
    }
    for row in tx
        .query(
            "SELECT id, sequence, deleted_s, deleted_ns, allow_reingest FROM tombstones \
             WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(db_error)?
    {
        let id: String = row.get(0);
        if let Some(w) = work.get_mut(&id) {
            w.had_tombstone = true;
            if !w.had_live_row {
                w.state = State::Deleted {
                    sequence: row.get(1),
                    at: super::timestamp(&row, 2, 3)?,
                    allow_reingest: row.get(4),
                };
            }
        }
    }

    let mut next = head + 1;
    let mut versions: Vec<NewVersion<'_>> = Vec::new();
    let mut changes: Vec<ChangeRow<'_>> = Vec::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            Op::Put {
                id,
                content,
                content_sha256,
                restore,
            } => {
                let w = work.get_mut(id.as_str()).expect("every id was looked up");
                let previous = match w.state {
                    State::Deleted {
                        sequence,
                        at,
                        allow_reingest: false,
                    } => {
                        outcomes.push(Ok(WriteOutcome::Rejected(format!(
                            "id: article {id} was deleted on {} (change {sequence}); it cannot \
                             be ingested again",
                            at.to_rfc3339()
                        ))));
                        continue;
                    }
                    State::Deleted { .. } | State::Absent => None,
                    State::Live { revision, sha, .. } => Some((revision, sha)),
                };
                let (revision, ingested_at) = match restore {
                    None => {
                        if previous.is_some_and(|(_, sha)| sha == *content_sha256) {
                            outcomes.push(Ok(WriteOutcome::Unchanged));
                            continue;
                        }
                        (previous.map_or(1, |(revision, _)| revision + 1), now)
                    }
                    Some((restored, at)) => {
                        let current = previous.map_or(0, |(revision, _)| revision);
                        let stored_sha = match previous {
                            Some((revision, sha)) if revision == *restored => Some(sha),
                            Some((revision, _)) if *restored < revision => {
                                stored_revision_sha(tx, &versions, w, id, *restored).await?
                            }
                            _ => None,
                        };
                        if stored_sha == Some(*content_sha256) {
                            outcomes.push(Ok(WriteOutcome::Unchanged));
                            continue;
                        }
                        if *restored != current + 1 {
                            outcomes.push(Ok(WriteOutcome::Rejected(format!(
                                "revision: revision {restored} of {id} cannot be restored: the \
                                 archive holds revision {current} of it, and revisions are \
                                 restored in order, each one after the one before"
                            ))));
                            continue;
                        }
                        (*restored, *at)
                    }
                };
                let sequence = next;
                next += 1;
                versions.push(NewVersion {
                    id,
                    content,
                    sha: content_sha256,
                    revision,
                    sequence,
                    ingested_at,
                    kept: true,
                });
                changes.push(ChangeRow {
                    sequence,
                    kind: if revision == 1 { 1 } else { 2 },
                    id,
                    revision,
                    at: ingested_at,
                    reason: "",
                });
                if keep_revisions > 0 {
                    let kept_from = (revision + 1).saturating_sub(keep_revisions).max(1);
                    for v in versions.iter_mut().filter(|v| v.id == id) {
                        if v.revision < kept_from {
                            v.kept = false;
                        }
                    }
                    w.prune_below = w.prune_below.max(kept_from);
                }
                w.state = State::Live {
                    revision,
                    sequence,
                    sha: *content_sha256,
                };
                w.touched = true;
                Ok(if previous.is_some() {
                    WriteOutcome::Updated
                } else {
                    WriteOutcome::Created
                })
            }
            Op::Delete {
                id,
                reason,
                allow_reingest,
            } => {
                let w = work.get_mut(id.as_str()).expect("every id was looked up");
                match w.state {
                    State::Absent => Err(Error::NotFound(id.to_string())),
                    State::Deleted { sequence, at, .. } => Err(Error::Deleted {
                        id: id.to_string(),
                        at,
                        sequence: u64::try_from(sequence).unwrap_or(0),
                    }),
                    State::Live { revision, .. } => {
                        let sequence = next;
                        next += 1;
                        changes.push(ChangeRow {
                            sequence,
                            kind: 3,
                            id,
                            revision,
                            at: now,
                            reason,
                        });
                        for v in versions.iter_mut().filter(|v| v.id == id) {
                            v.kept = false;
                        }
                        w.erase = true;
                        w.touched = true;
                        w.prune_below = 0;
                        w.state = State::Deleted {
                            sequence,
                            at: now,
                            allow_reingest: *allow_reingest,
                        };
                        Ok(WriteOutcome::Deleted {
                            sequence: u64::try_from(sequence).unwrap_or(0),
                        })
                    }
                }
            }
        };
        outcomes.push(outcome);
    }
    if changes.is_empty() {
        return Ok((outcomes, u64::try_from(head).unwrap_or(0)));
    }

    // The versions replaced become history; a deleted id's rows all go.
    let moved: Vec<&str> = ids_where(&work, |w| w.had_live_row && w.touched);
    if !moved.is_empty() {
        tx.execute(
            "INSERT INTO revisions SELECT * FROM articles WHERE id = ANY($1)",
            &[&moved],
        )
        .await
        .map_err(db_error)?;
        tx.execute("DELETE FROM articles WHERE id = ANY($1)", &[&moved])
            .await
            .map_err(db_error)?;
    }
    let erased = ids_where(&work, |w| w.erase);
    if !erased.is_empty() {
        tx.execute("DELETE FROM revisions WHERE id = ANY($1)", &[&erased])
            .await
            .map_err(db_error)?;
    }
    let (pruned_ids, pruned_below): (Vec<&str>, Vec<i64>) = work
        .iter()
        .filter(|(_, w)| w.prune_below > 1)
        .map(|(id, w)| (id.as_str(), to_i64(w.prune_below)))
        .unzip();
    if !pruned_ids.is_empty() {
        tx.execute(
            "DELETE FROM revisions r USING unnest($1::text[], $2::bigint[]) AS p(id, below) \
             WHERE r.id = p.id AND r.revision < p.below",
            &[&pruned_ids, &pruned_below],
        )
        .await
        .map_err(db_error)?;
    }

    // New versions: each id's newest (when it is live) is current.
    let is_current = |v: &NewVersion<'_>| matches!(work[v.id.as_str()].state, State::Live { sequence, .. } if sequence == v.sequence);
    let (current, older): (Vec<&NewVersion<'_>>, Vec<&NewVersion<'_>>) = versions
        .iter()
        .filter(|v| v.kept)
        .partition(|v| is_current(v));
    insert_versions(tx, "articles", &current).await?;

    // The day counters: each article that changed leaves its old day and
    // joins its new one (a deleted one only leaves).
    let mut days: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for w in work.values().filter(|w| w.touched) {
        if let Some(day) = w.old_day {
            *days.entry(day).or_default() -= 1;
        }
    }
    for v in &current {
        *days
            .entry(Interval::Day.bucket(v.content.published_at))
            .or_default() += 1;
    }
    let (day_numbers, day_deltas): (Vec<i64>, Vec<i64>) =
        days.into_iter().filter(|(_, delta)| *delta != 0).unzip();
    if !day_numbers.is_empty() {
        tx.execute(
            "INSERT INTO day_counts (day, articles) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[]) \
             ON CONFLICT (day) DO UPDATE SET articles = day_counts.articles + excluded.articles",
            &[&day_numbers, &day_deltas],
        )
        .await
        .map_err(db_error)?;
    }
    insert_versions(tx, "revisions", &older).await?;

    // Tombstones: set by a deletion, lifted by a re-ingest that was allowed.
    let deleted: Vec<(&str, i64, Timestamp, bool)> = work
        .iter()
        .filter(|(_, w)| w.touched)
        .filter_map(|(id, w)| match w.state {
            State::Deleted {
                sequence,
                at,
                allow_reingest,
            } => Some((id.as_str(), sequence, at, allow_reingest)),
            _ => None,
        })
        .collect();
    if !deleted.is_empty() {
        let ids: Vec<&str> = deleted.iter().map(|d| d.0).collect();
        let sequences: Vec<i64> = deleted.iter().map(|d| d.1).collect();
        let seconds: Vec<i64> = deleted.iter().map(|d| d.2.seconds).collect();
        let nanos: Vec<i32> = deleted.iter().map(|d| super::nanos(d.2)).collect();
        let allow: Vec<bool> = deleted.iter().map(|d| d.3).collect();
        tx.execute(
            "INSERT INTO tombstones (id, sequence, deleted_s, deleted_ns, allow_reingest) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::boolean[]) \
             ON CONFLICT (id) DO UPDATE SET sequence = excluded.sequence, \
               deleted_s = excluded.deleted_s, deleted_ns = excluded.deleted_ns, \
               allow_reingest = excluded.allow_reingest",
            &[&ids, &sequences, &seconds, &nanos, &allow],
        )
        .await
        .map_err(db_error)?;
    }
    let revived = ids_where(&work, |w| {
        w.had_tombstone && matches!(w.state, State::Live { .. })
    });
    if !revived.is_empty() {
        tx.execute("DELETE FROM tombstones WHERE id = ANY($1)", &[&revived])
            .await
            .map_err(db_error)?;
    }

    let sequences: Vec<i64> = changes.iter().map(|c| c.sequence).collect();
    let kinds: Vec<i16> = changes.iter().map(|c| c.kind).collect();
    let change_ids: Vec<&str> = changes.iter().map(|c| c.id.as_str()).collect();
    let revisions: Vec<i64> = changes.iter().map(|c| to_i64(c.revision)).collect();
    let seconds: Vec<i64> = changes.iter().map(|c| c.at.seconds).collect();
    let nanos: Vec<i32> = changes.iter().map(|c| super::nanos(c.at)).collect();
    let reasons: Vec<&str> = changes.iter().map(|c| c.reason).collect();
    tx.execute(
        "INSERT INTO changes (sequence, kind, id, revision, changed_s, changed_ns, reason) \
         SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::bigint[], \
                              $5::bigint[], $6::integer[], $7::text[])",
        &[
            &sequences,
            &kinds,
            &change_ids,
            &revisions,
            &seconds,
            &nanos,
            &reasons,
        ],
    )
    .await
    .map_err(db_error)?;
    let last = next - 1;
    let live_before = work.values().filter(|w| w.had_live_row).count() as i64;
    let live_after = work
        .values()
        .filter(|w| matches!(w.state, State::Live { .. }))
        .count() as i64;
    tx.execute(
        "UPDATE feed_head SET last_sequence = $1, live_articles = live_articles + $2 \
         WHERE singleton",
        &[&last, &(live_after - live_before)],
    )
    .await
    .map_err(db_error)?;
    // Delivered at commit, to every replica's feed listener.
    tx.execute(
        "SELECT pg_notify('archive_changes', $1)",
        &[&last.to_string()],
    )
    .await
    .map_err(db_error)?;
    Ok((outcomes, u64::try_from(last).unwrap_or(0)))
}

fn ids_where(work: &HashMap<String, IdWork>, wanted: impl Fn(&IdWork) -> bool) -> Vec<&str> {
    work.iter()
        .filter(|(_, w)| wanted(w))
        .map(|(id, _)| id.as_str())
        .collect()
}

/// The hash of revision `revision` of `id` as stored before this op: in the
/// batch, or in `revisions` unless the batch erased it.
async fn stored_revision_sha(
    tx: &Transaction<'_>,
    versions: &[NewVersion<'_>],
    w: &IdWork,
    id: &ArticleId,
    revision: u64,
) -> Result<Option<[u8; 32]>> {
    if let Some(v) = versions
        .iter()
        .find(|v| v.kept && v.id == id && v.revision == revision)
    {
        return Ok(Some(*v.sha));
    }
    if w.erase {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            "SELECT content_sha256 FROM revisions WHERE id = $1 AND revision = $2",
            &[&id.as_str(), &to_i64(revision)],
        )
        .await
        .map_err(db_error)?;
    Ok(row.and_then(|row| row.get::<_, Vec<u8>>(0).try_into().ok()))
}

/// The derived columns of one version row.
struct Derived {
    revision: i64,
    ingested_s: i64,
    ingested_ns: i32,
    sha: Vec<u8>,
    url_key: Option<Vec<u8>>,
    published_s: i64,
    published_ns: i32,
    published_day: i64,
    source_lower: String,
}

/// Inserts version rows into `table` (`articles` or `revisions`), in
/// multi-row INSERTs: plain SQL every engine that speaks PostgreSQL runs.
async fn insert_versions(
    tx: &Transaction<'_>,
    table: &str,
    versions: &[&NewVersion<'_>],
) -> Result<()> {
    for chunk in versions.chunks(INSERT_ROWS) {
        let derived: Vec<Derived> = chunk
            .iter()
            .map(|v| {
                let published_at = v.content.published_at;
                Derived {
                    revision: to_i64(v.revision),
                    ingested_s: v.ingested_at.seconds,
                    ingested_ns: super::nanos(v.ingested_at),
                    sha: v.sha.to_vec(),
                    url_key: UrlKey::of(&v.content.url)
                        .map(|key| keys::url_index_key(&key, published_at, v.id)),
                    published_s: published_at.seconds,
                    published_ns: super::nanos(published_at),
                    published_day: Interval::Day.bucket(published_at),
                    source_lower: v.content.source.to_ascii_lowercase(),
                }
            })
            .collect();
        let ids: Vec<&str> = chunk.iter().map(|v| v.id.as_str()).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 20);
        let mut values = String::new();
        for (i, (v, d)) in chunk.iter().zip(&derived).enumerate() {
            let c = v.content;
            params.extend_from_slice(&[
                &ids[i] as &(dyn ToSql + Sync),
                &d.revision,
                &v.sequence,
                &d.ingested_s,
                &d.ingested_ns,
                &d.sha,
                &c.url,
                &d.url_key,
                &c.title,
                &c.body,
                &d.published_s,
                &d.published_ns,
                &d.published_day,
                &c.authors,
                &c.source,
                &d.source_lower,
                &c.section,
                &c.tags,
                &c.language,
                &c.description,
            ]);
            if i > 0 {
                values.push(',');
            }
            let base = i * 20;
            values.push('(');
            for column in 1..=20 {
                if column > 1 {
                    values.push(',');
                }
                values.push_str(&format!("${}", base + column));
            }
            values.push(')');
        }
        tx.execute(
            &format!(
                "INSERT INTO {table} (id, revision, sequence, ingested_s, ingested_ns, \
                 content_sha256, url, url_key, title, body, published_s, published_ns, \
                 published_day, authors, source, source_lower, section, tags, language, \
                 description) VALUES {values}"
            ),
            &params,
        )
        .await
        .map_err(db_error)?;
    }
    Ok(())
}
