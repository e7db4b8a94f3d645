//! The PostgreSQL engine: the same archive in a database that any number of
//! stateless `article-archive serve` replicas share.
//!
//! # Layout (schema 1, `migrations/0001_archive.sql`)
//!
//! - `articles`: the current version of every live article, every field a
//!   column, with indexes for the date order, sources, sections and urls.
//! - `revisions`: older versions, the same columns, keyed (id, revision).
//! - `tombstones`: deleted ids, with whether they may come back.
//! - `changes`: the feed, one row per stored version and per deletion; a
//!   version's content is found by its sequence in `articles` or
//!   `revisions` (deleted and pruned ones are in neither, and are passed
//!   over as on sled).
//! - `feed_head`: one row, the last sequence number given out. Every
//!   writing transaction updates it first and holds its lock to the
//!   commit, so sequence numbers are taken and committed in one order, on
//!   every replica: a reader that sees change N sees all before it. That
//!   serialises writers; a replica's writer batches (one transaction per
//!   group commit, as on sled), so the lock is taken once per batch.
//! - `archive_settings`: the page-token key, so a token from one replica
//!   is good at every other; `archive_schema`: the migrations applied.
//!
//! Writes go through one writer task per replica (`writer.rs`); reads go
//! straight to the pool. Followers of the feed wait on `feed.rs`, which
//! LISTENs for the writers' NOTIFY and polls the head as a fallback.

mod feed;
pub mod schema;
mod writer;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use deadpool_postgres::{ClientWrapper, Object, Pool, PoolError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_postgres::{error::SqlState, types::ToSql, Row};

use super::{
    calendar::Interval, BatchLimits, ChangeKind, ChangesPage, ChangesRequest, CountBucket,
    DateRange, Filter, Order, PageRequest, Position, RevisionsPage, StoreUsage, StoredPage,
    UrlPage, UrlPageRequest, WriteHealth, WriteOutcome, FILTER_SCAN_BUDGET,
};
use crate::{
    article::{Article, ArticleContent, ArticleId, StoredArticle, Timestamp},
    error::{Error, Result},
    store::keys,
};

/// How to reach the database and how to write to it.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq-style url (`postgres://user:password@host:port/db?sslmode=require`)
    /// or key=value string.
    pub url: String,
    /// Extra CA certificates (PEM) to trust for the database's TLS
    /// certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Connections in the pool (reads share them; the writer and the feed
    /// listener have their own).
    pub pool_size: usize,
    /// How long a call waits for a connection before it fails UNAVAILABLE.
    pub connect_timeout: Duration,
    /// Bounds on one group commit (one transaction).
    pub batch_limits: BatchLimits,
    /// Articles that may wait for the writer before submitters wait too.
    pub queue_capacity: usize,
    /// Article bytes that may wait for the writer.
    pub queue_bytes: usize,
    /// Revisions kept per article, the current one included (0: all).
    pub keep_revisions: u64,
    /// How often the feed listener reads the head when no notification
    /// came (a fallback; notifications normally wake followers at once).
    pub head_poll_interval: Duration,
}

impl PostgresConfig {
    /// Default settings for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            batch_limits: BatchLimits::default(),
            queue_capacity: 4096,
            queue_bytes: 64 * 1024 * 1024,
            keep_revisions: 0,
            head_poll_interval: Duration::from_secs(1),
        }
    }
}

/// The engine. Dropping it stops the listener; the writer finishes its
/// queue first.
pub struct PostgresStore {
    pool: Pool,
    page_token_key: [u8; 32],
    writes: mpsc::Sender<writer::Request>,
    /// KiB of article text that may wait for the writer.
    queue_bytes: Arc<Semaphore>,
    queue_kib: usize,
    queue_capacity: usize,
    health: watch::Receiver<WriteHealth>,
    durable: watch::Receiver<u64>,
    keep_revisions: u64,
    listener: tokio::task::JoinHandle<()>,
    /// Set by [`PostgresStore::attach_metrics`]; the writer and the feed
    /// listener record into it.
    metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::Metrics>>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// An operation for the writer.
pub(crate) enum Op {
    /// Store a version.
    Put {
        id: ArticleId,
        content: Box<ArticleContent>,
        content_sha256: [u8; 32],
        /// Restoring: this exact revision, written at this time.
        restore: Option<(u64, Timestamp)>,
    },
    /// Delete an article.
    Delete {
        id: ArticleId,
        reason: String,
        allow_reingest: bool,
    },
}

impl PostgresStore {
    /// Connects, applies the migrations the database lacks, and starts the
    /// writer and the feed listener.
    ///
    /// # Errors
    /// [`Error::Config`] for a url or CA file that cannot be used,
    /// [`Error::DatabaseUnavailable`] when the database cannot be reached,
    /// [`Error::SchemaTooNew`], or [`Error::Database`].
    pub async fn open(config: &PostgresConfig) -> Result<Self> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| Error::Config(format!("--store: not a PostgreSQL url: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout);
        }
        pg.application_name("article-archive");
        let tls = schema::tls(config.ca_file.as_deref())?;
        let pool = schema::pool(
            pg.clone(),
            tls.clone(),
            config.pool_size.max(1),
            config.connect_timeout,
        )?;
        // At start, a database that cannot be reached is a reason not to
        // start (the service manager restarts the server), not a call to
        // retry.
        let mut client = pool.get().await.map_err(|e| match pool_error(e) {
            Error::DatabaseUnavailable(reason) => {
                Error::Config(format!("--store: cannot connect to the database: {reason}"))
            }
            other => other,
        })?;
        let version = schema::migrate(&mut client).await?;
        let page_token_key = schema::page_token_key(&client).await?;
        let head = u64::try_from(read_head(&client).await?).unwrap_or(0);
        drop(client);
        tracing::info!(schema = version, head, "connected to the PostgreSQL store");

        let queue_kib = kib(config.queue_bytes).clamp(1, u32::MAX as usize);
        let (health_tx, health) = watch::channel(WriteHealth::Writable);
        let health_tx = Arc::new(health_tx);
        let (durable_tx, durable) = watch::channel(head);
        let durable_tx = Arc::new(durable_tx);
        let (writes, queue) = mpsc::channel(config.queue_capacity.max(1));
        let metrics = Arc::new(std::sync::OnceLock::new());
        // The writer has a connection of its own, so reads that take every
        // pooled one never hold up an acknowledgement.
        let writer_pool = schema::pool(pg.clone(), tls.clone(), 1, config.connect_timeout)?;
        tokio::spawn(writer::run(
            writer::Writer {
                pool: writer_pool,
                metrics: Arc::clone(&metrics),
                limits: config.batch_limits,
                keep_revisions: config.keep_revisions,
                health: Arc::clone(&health_tx),
                durable: Arc::clone(&durable_tx),
            },
            queue,
        ));
        let listener = tokio::spawn(feed::listen(
            pg,
            tls,
            config.head_poll_interval,
            health_tx,
            durable_tx,
            Arc::clone(&metrics),
        ));
        Ok(Self {
            pool,
            page_token_key,
            writes,
            queue_bytes: Arc::new(Semaphore::new(queue_kib)),
            queue_kib,
            queue_capacity: config.queue_capacity.max(1),
            health,
            durable,
            keep_revisions: config.keep_revisions,
            listener,
            metrics,
        })
    }

    /// The key that signs page tokens (shared by every replica).
    pub fn page_token_key(&self) -> &[u8; 32] {
        &self.page_token_key
    }

    /// Writable, or unreachable while the database cannot be reached.
    pub fn write_health(&self) -> watch::Receiver<WriteHealth> {
        self.health.clone()
    }

    /// The newest committed sequence number, and every change of it.
    pub fn durable_changes(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Operations queued for the writer.
    pub fn usage(&self) -> StoreUsage {
        StoreUsage {
            queued_operations: (self.queue_capacity - self.writes.capacity()) as u64,
            ..StoreUsage::default()
        }
    }

    /// Queues an operation; waits while the queue is full (by count or by
    /// bytes).
    ///
    /// # Errors
    /// [`Error::Closed`] when the writer has stopped.
    pub(crate) async fn submit(&self, op: Op) -> Result<oneshot::Receiver<Result<WriteOutcome>>> {
        let bytes = match &op {
            Op::Put { content, .. } => {
                content.body.len() + content.title.len() + content.description.len()
            }
            Op::Delete { reason, .. } => reason.len(),
        };
        // An article larger than the whole budget waits for all of it.
        let permits = kib(bytes).clamp(1, self.queue_kib) as u32;
        let permit = Arc::clone(&self.queue_bytes)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Closed)?;
        let (reply, outcome) = oneshot::channel();
        self.writes
            .send(writer::Request {
                op,
                reply,
                _permit: permit,
            })
            .await
            .map_err(|_| Error::Closed)?;
        Ok(outcome)
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// One try of [`PostgresStore::get_revision`].
    async fn get_revision_once(&self, id: &ArticleId, revision: u64) -> Result<StoredArticle> {
        let client = self.client().await?;
        let current = query_opt(
            &client,
            &format!(
                "SELECT {} FROM articles WHERE id = $1",
                version_columns(true)
            ),
            &[&id.as_str()],
        )
        .await?;
        let Some(current) = current else {
            return Err(missing(&client, id).await);
        };
        let current = version_from_row(&current, 0)?;
        if revision == 0 || revision == current.revision {
            return Ok(current);
        }
        let older = if revision < current.revision {
            query_opt(
                &client,
                &format!(
                    "SELECT {} FROM revisions WHERE id = $1 AND revision = $2",
                    version_columns(true)
                ),
                &[&id.as_str(), &to_i64(revision)],
            )
            .await?
        } else {
            None
        };
        match older {
            Some(row) => version_from_row(&row, 0),
            None => Err(Error::NoSuchRevision {
                id: id.to_string(),
                revision,
                current: current.revision,
                pruned: self.keep_revisions > 0 && revision < current.revision,
            }),
        }
    }

    /// One try of [`PostgresStore::batch_get`].
    async fn batch_get_once(
        &self,
        ids: &[ArticleId],
        with_body: bool,
    ) -> Result<Vec<Option<StoredArticle>>> {
        let client = self.client().await?;
        let wanted: Vec<&str> = ids.iter().map(ArticleId::as_str).collect();
        let rows = query(
            &client,
            &format!(
                "SELECT {} FROM articles WHERE id = ANY($1)",
                version_columns(with_body)
            ),
            &[&wanted],
        )
        .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in &rows {
            let article = version_from_row(row, 0)?;
            found.insert(article.id.clone(), article);
        }
        Ok(ids.iter().map(|id| found.remove(id)).collect())
    }

    /// One try of [`PostgresStore::page`].
    async fn page_once(&self, request: &PageRequest) -> Result<StoredPage> {
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT {} FROM articles WHERE true",
            version_columns(request.with_body)
        ));
        let descending = request.order == Order::NewestFirst;
        if let Some(after) = &request.after {
            let op = if descending { "<" } else { ">" };
            let (s, ns) = (
                sql.param(after.published_at.seconds),
                sql.param(nanos(after.published_at)),
            );
            let id = sql.param(after.id.as_str().to_owned());
            sql.push(&format!(
                " AND (published_s, published_ns, id) {op} ({s}, {ns}, {id})"
            ));
        }
        sql.range(request.range);
        sql.filter(&request.filter);
        let direction = if descending { "DESC" } else { "ASC" };
        let limit = sql.param(to_i64(request.limit as u64 + 1));
        sql.push(&format!(
            " ORDER BY published_s {direction}, published_ns {direction}, id {direction} LIMIT {limit}"
        ));
        let client = self.client().await?;
        let rows = query(&client, &sql.text, &sql.refs()).await?;
        let mut page = StoredPage {
            articles: Vec::new(),
            more: rows.len() > request.limit,
            resume_after: None,
        };
        let mut bytes = 0usize;
        for row in rows.iter().take(request.limit) {
            let article = version_from_row(row, 0)?;
            let size = estimated_size(&article);
            if bytes + size > request.byte_budget && !page.articles.is_empty() {
                page.more = true;
                break;
            }
            bytes += size;
            page.resume_after = Some(Position {
                published_at: article.content.published_at,
                id: article.id.clone(),
            });
            page.articles.push(article);
        }
        Ok(page)
    }

    /// One try of [`PostgresStore::by_url`].
    async fn by_url_once(&self, request: &UrlPageRequest) -> Result<UrlPage> {
        let client = self.client().await?;
        let url_query = &request.query;
        let mut page = UrlPage {
            articles: Vec::new(),
            more: false,
            resume_after: None,
        };
        let mut bytes = 0usize;
        let mut examined = 0usize;
        let statement = format!(
            "SELECT {}, url_key FROM articles WHERE url_key > $1 AND url_key < $2 \
             ORDER BY url_key LIMIT $3",
            version_columns(request.with_body)
        );
        let first_statement = statement.replace("url_key > $1", "url_key >= $1");
        for (start, end) in keys::url_scan_ranges(url_query) {
            let mut lower = match &request.after {
                Some(after) if after.as_slice() >= start.as_slice() => Some(after.clone()),
                _ => None,
            };
            if lower.as_ref().is_some_and(|l| *l >= end) {
                continue;
            }
            loop {
                let wanted = request.limit.saturating_sub(page.articles.len());
                let chunk = to_i64((wanted.max(1) as u64).min(256) + 1);
                let rows = match &lower {
                    Some(after) => query(&client, &statement, &[after, &end, &chunk]).await?,
                    None => query(&client, &first_statement, &[&start, &end, &chunk]).await?,
                };
                let exhausted = (rows.len() as i64) < chunk;
                for row in &rows {
                    if page.articles.len() == request.limit || examined == FILTER_SCAN_BUDGET {
                        page.more = true;
                        return Ok(page);
                    }
                    examined += 1;
                    let key: Vec<u8> = row.get(VERSION_COLUMN_COUNT);
                    let (url, _) =
                        keys::parse_url_index_key(&key).ok_or_else(|| Error::Corrupt {
                            key: format!("articles.url_key {key:?}"),
                            reason: "not a url-index key".into(),
                        })?;
                    if url_query.matches(&url) {
                        let article = version_from_row(row, 0)?;
                        let size = estimated_size(&article);
                        if bytes + size > request.byte_budget && !page.articles.is_empty() {
                            page.more = true;
                            return Ok(page);
                        }
                        bytes += size;
                        page.articles.push(article);
                    }
                    page.resume_after = Some(key.clone());
                    lower = Some(key);
                }
                if exhausted {
                    break;
                }
            }
        }
        Ok(page)
    }

    /// One try of [`PostgresStore::count`]: counted by UTC day in the
    /// database (whole days from `day_counts` when unfiltered), then summed
    /// into months or years here.
    async fn count_once(
        &self,
        range: DateRange,
        interval: Interval,
        filter: &Filter,
    ) -> Result<Vec<CountBucket>> {
        let client = self.client().await?;
        let edge = |last: bool| {
            let client = &client;
            async move {
                let direction = if last { "DESC" } else { "ASC" };
                let row = query_opt(
                    client,
                    &format!(
                        "SELECT published_s, published_ns FROM articles \
                         ORDER BY published_s {direction}, published_ns {direction} LIMIT 1"
                    ),
                    &[],
                )
                .await?;
                row.map(|row| timestamp(&row, 0, 1)).transpose()
            }
        };
        let first = match range.start {
            Some(start) => Some(start),
            None => edge(false).await?,
        };
        let last = match range.end {
            Some(end) => Some(super::just_before(end)),
            None => edge(true).await?,
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Vec::new());
        };
        super::check_count_span(first, last, interval)?;
        let mut per_day: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        // Unfiltered, whole days come from the writers' day counters; the
        // days a bound cuts, and filtered counts, from the articles.
        let (scans, whole_days) = if filter.is_empty() {
            split_by_whole_days(range)
        } else {
            (vec![range], None)
        };
        for scan in scans {
            let mut sql = Sql::default();
            sql.push("SELECT published_day, count(*)::bigint FROM articles WHERE true");
            sql.range(scan);
            sql.filter(filter);
            sql.push(" GROUP BY published_day");
            for row in query(&client, &sql.text, &sql.refs()).await? {
                *per_day.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
            }
        }
        if let Some((from, to)) = whole_days {
            let mut sql = Sql::default();
            sql.push("SELECT day, articles FROM day_counts WHERE articles <> 0");
            if let Some(from) = from {
                let p = sql.param(from);
                sql.push(&format!(" AND day >= {p}"));
            }
            if let Some(to) = to {
                let p = sql.param(to);
                sql.push(&format!(" AND day < {p}"));
            }
            for row in query(&client, &sql.text, &sql.refs()).await? {
                *per_day.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
            }
        }
        let mut buckets: Vec<CountBucket> = Vec::new();
        for (day, count) in per_day.into_iter().filter(|(_, count)| *count > 0) {
            let bucket = interval.bucket(Timestamp {
                seconds: day * 86_400,
                nanos: 0,
            });
            let start = interval.start(bucket);
            match buckets.last_mut() {
                Some(last) if last.start == start => last.count += count as u64,
                _ => buckets.push(CountBucket {
                    start,
                    count: count as u64,
                }),
            }
        }
        Ok(buckets)
    }

    /// One try of [`PostgresStore::revisions`].
    async fn revisions_once(
        &self,
        id: &ArticleId,
        before: Option<u64>,
        limit: usize,
        with_body: bool,
    ) -> Result<RevisionsPage> {
        let client = self.client().await?;
        let columns = version_columns(with_body);
        let below = to_i64(before.unwrap_or(u64::MAX).min(i64::MAX as u64));
        let fetch = to_i64((limit as u64).saturating_add(1).min(i64::MAX as u64));
        let rows = query(
            &client,
            &format!(
                "SELECT {columns} FROM articles WHERE id = $1 AND revision < $2 \
                 UNION ALL \
                 SELECT {columns} FROM revisions WHERE id = $1 AND revision < $2 \
                 ORDER BY revision DESC LIMIT $3"
            ),
            &[&id.as_str(), &below, &fetch],
        )
        .await?;
        if rows.is_empty() {
            // Nothing below `before`: an unknown or deleted id says so; a
            // live one has an empty page.
            let live = query_opt(
                &client,
                "SELECT 1 FROM articles WHERE id = $1",
                &[&id.as_str()],
            )
            .await?;
            if live.is_none() {
                return Err(missing(&client, id).await);
            }
        }
        let more = rows.len() > limit;
        let revisions = rows
            .iter()
            .take(limit)
            .map(|row| version_from_row(row, 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(RevisionsPage { revisions, more })
    }

    /// One try of [`PostgresStore::changes`].
    async fn changes_once(&self, request: &ChangesRequest) -> Result<ChangesPage> {
        let client = self.client().await?;
        let durable = u64::try_from(read_head(&client).await?).unwrap_or(0);
        let mut page = ChangesPage {
            changes: Vec::new(),
            resume_after: request.after,
            reached_end: true,
            durable,
        };
        if durable <= request.after {
            return Ok(page);
        }
        let columns = version_columns(request.with_body);
        let statement = format!(
            "SELECT c.sequence, c.kind, c.id, c.changed_s, c.changed_ns, c.reason, v.* \
             FROM changes c LEFT JOIN LATERAL ( \
                 SELECT {columns} FROM articles a WHERE a.sequence = c.sequence \
                 UNION ALL \
                 SELECT {columns} FROM revisions r WHERE r.sequence = c.sequence \
             ) v ON c.kind <> 3 \
             WHERE c.sequence > $1 AND c.sequence <= $2 ORDER BY c.sequence LIMIT $3"
        );
        let mut bytes = 0usize;
        let mut examined = 0usize;
        let head = to_i64(durable);
        loop {
            let chunk = to_i64((request.limit as u64).clamp(16, 1024));
            let rows = query(
                &client,
                &statement,
                &[&to_i64(page.resume_after), &head, &chunk],
            )
            .await?;
            let exhausted = (rows.len() as i64) < chunk;
            for row in &rows {
                let sequence = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
                let kind: i16 = row.get(1);
                let change = match kind {
                    3 => Some(super::Change {
                        sequence,
                        kind: ChangeKind::Deleted,
                        id: parse_id(row.get(2))?,
                        article: None,
                        changed_at: timestamp(row, 3, 4)?,
                        reason: row.get(5),
                    }),
                    _ => match row.get::<_, Option<String>>(6) {
                        // Deleted or pruned since: passed over.
                        None => None,
                        Some(_) => {
                            let article = version_from_row(row, 6)?;
                            request
                                .filter
                                .matches(&article.content)
                                .then(|| super::Change {
                                    sequence,
                                    kind: if kind == 1 {
                                        ChangeKind::Created
                                    } else {
                                        ChangeKind::Updated
                                    },
                                    id: article.id.clone(),
                                    changed_at: article.ingested_at,
                                    article: Some(article),
                                    reason: String::new(),
                                })
                        }
                    },
                };
                examined += 1;
                if let Some(change) = change {
                    let size = change.estimated_size();
                    if page.changes.len() == request.limit
                        || (bytes + size > request.byte_budget && !page.changes.is_empty())
                    {
                        page.reached_end = false;
                        return Ok(page);
                    }
                    bytes += size;
                    page.changes.push(change);
                }
                page.resume_after = sequence;
                // A full page ends here, not at the next query: that one
                // would fetch a chunk of bodies only to find no room.
                if examined >= FILTER_SCAN_BUDGET || page.changes.len() == request.limit {
                    page.reached_end = page.resume_after >= durable;
                    return Ok(page);
                }
            }
            if exhausted {
                break;
            }
        }
        page.resume_after = page.resume_after.max(durable);
        Ok(page)
    }

    /// Checks the tables against each other: every held version's hash,
    /// its change in the feed, no history without a live article, no id
    /// both live and deleted, a gapless feed up to the head, day numbers.
    /// Reads every version.
    ///
    /// # Errors
    /// A database error.
    pub async fn check(&self) -> Result<super::CheckReport> {
        let client = self.client().await?;
        let count = |sql: &'static str| {
            let client = &client;
            async move {
                let row = client.query_one(sql, &[]).await.map_err(db_error)?;
                Ok::<u64, Error>(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
            }
        };
        let articles = count("SELECT count(*)::bigint FROM articles").await?;
        let older = count("SELECT count(*)::bigint FROM revisions").await?;
        let deleted = count("SELECT count(*)::bigint FROM tombstones").await?;
        let mut problems = Vec::new();
        for (what, sql) in [
            (
                "ids both live and deleted",
                "SELECT count(*)::bigint FROM articles a JOIN tombstones t USING (id)",
            ),
            (
                "older revisions of no live article",
                "SELECT count(*)::bigint FROM revisions r \
                 WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = r.id)",
            ),
            (
                "older revisions not older than the current one",
                "SELECT count(*)::bigint FROM revisions r JOIN articles a USING (id) \
                 WHERE r.revision >= a.revision",
            ),
            (
                "versions without their change in the feed",
                "SELECT count(*)::bigint FROM (SELECT id, revision, sequence FROM articles \
                 UNION ALL SELECT id, revision, sequence FROM revisions) v \
                 WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.sequence = v.sequence \
                   AND c.id = v.id AND c.revision = v.revision AND c.kind IN (1, 2))",
            ),
            (
                "deleted ids without their DELETED change",
                "SELECT count(*)::bigint FROM tombstones t WHERE NOT EXISTS (SELECT 1 FROM \
                 changes c WHERE c.sequence = t.sequence AND c.id = t.id AND c.kind = 3)",
            ),
            (
                "versions with a wrong day number",
                "SELECT count(*)::bigint FROM (SELECT published_s, published_day FROM articles \
                 UNION ALL SELECT published_s, published_day FROM revisions) v \
                 WHERE published_day <> floor(published_s::numeric / 86400)",
            ),
            (
                "changes missing below the feed head (sequence numbers must be gapless)",
                "SELECT (h.last_sequence - (SELECT count(*) FROM changes))::bigint \
                 FROM feed_head h",
            ),
            (
                "live articles more or fewer than the feed head counts",
                "SELECT abs(h.live_articles - (SELECT count(*) FROM articles))::bigint \
                 FROM feed_head h",
            ),
            (
                "days whose counter disagrees with the articles",
                "SELECT count(*)::bigint FROM (SELECT published_day, count(*) AS n FROM \
                 articles GROUP BY published_day) a FULL JOIN (SELECT day, articles FROM \
                 day_counts WHERE articles <> 0) d ON a.published_day = d.day \
                 WHERE a.n IS DISTINCT FROM d.articles",
            ),
            (
                "changes above the feed head",
                "SELECT count(*)::bigint FROM changes, feed_head WHERE sequence > last_sequence",
            ),
        ] {
            let found = count(sql).await?;
            if found > 0 {
                problems.push(format!("{found} {what}"));
            }
        }
        let columns = version_columns(true);
        let rows = query(
            &client,
            &format!("SELECT {columns} FROM articles UNION ALL SELECT {columns} FROM revisions"),
            &[],
        )
        .await?;
        for row in &rows {
            let version = version_from_row(row, 0)?;
            if version.content.sha256() != version.content_sha256 {
                problems.push(format!(
                    "revision {} of {}: the content does not match its hash",
                    version.revision, version.id
                ));
            }
        }
        Ok(super::CheckReport {
            records: articles + older,
            damaged_records: 0,
            articles,
            deleted,
            date_entries: articles,
            revision_entries: older,
            problems,
        })
    }

    /// Makes the writer count its batches into `metrics`, and the feed
    /// listener keep the live-article gauge at the count the writers keep
    /// in the database (all replicas' writes, read with the head). Blocking:
    /// call it off the async workers, inside the runtime.
    ///
    /// # Errors
    /// A database error reading the count.
    pub fn attach_metrics(&self, metrics: Arc<crate::metrics::Metrics>) -> Result<()> {
        let live = tokio::runtime::Handle::current().block_on(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT live_articles FROM feed_head", &[])
                .await
                .map_err(db_error)?;
            Ok::<i64, Error>(row.get(0))
        })?;
        metrics.set_articles(u64::try_from(live).unwrap_or(0));
        let _ = self.metrics.set(metrics);
        Ok(())
    }
}

/// The reads, each retried on a new connection when the database could not
/// be reached (a pooled connection the server closed during a restart is
/// found out only when used): up to [`READ_ATTEMPTS`] tries, 25 ms then
/// 50 ms apart, before the call fails UNAVAILABLE.
impl PostgresStore {
    /// Revision `revision` of `id` (0: the current one).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Deleted`], [`Error::NoSuchRevision`],
    /// or a database error.
    pub async fn get_revision(&self, id: &ArticleId, revision: u64) -> Result<StoredArticle> {
        retrying(|| self.get_revision_once(id, revision)).await
    }

    /// See [`crate::Store::batch_get`].
    ///
    /// # Errors
    /// A database error.
    pub async fn batch_get(
        &self,
        ids: &[ArticleId],
        with_body: bool,
    ) -> Result<Vec<Option<StoredArticle>>> {
        retrying(|| self.batch_get_once(ids, with_body)).await
    }

    /// One page of a date range: the same order, positions and size rules
    /// as the sled engine's.
    ///
    /// # Errors
    /// A database error.
    pub async fn page(&self, request: &PageRequest) -> Result<StoredPage> {
        retrying(|| self.page_once(request)).await
    }

    /// A page of articles whose url matches, in url-key order; resumes
    /// after a key of the same form as the sled engine's `urls` index.
    ///
    /// # Errors
    /// A database error.
    pub async fn by_url(&self, request: &UrlPageRequest) -> Result<UrlPage> {
        retrying(|| self.by_url_once(request)).await
    }

    /// Articles per `interval` in `range` that match `filter`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range of too many buckets, or a
    /// database error.
    pub async fn count(
        &self,
        range: DateRange,
        interval: Interval,
        filter: &Filter,
    ) -> Result<Vec<CountBucket>> {
        retrying(|| self.count_once(range, interval, filter)).await
    }

    /// A page of `id`'s history, newest first.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Deleted`], or a database error.
    pub async fn revisions(
        &self,
        id: &ArticleId,
        before: Option<u64>,
        limit: usize,
        with_body: bool,
    ) -> Result<RevisionsPage> {
        retrying(|| self.revisions_once(id, before, limit, with_body)).await
    }

    /// The changes after `request.after`, in sequence order, up to the head
    /// committed when the read began.
    ///
    /// # Errors
    /// A database error.
    pub async fn changes(&self, request: &ChangesRequest) -> Result<ChangesPage> {
        retrying(|| self.changes_once(request)).await
    }
}

/// Tries of a read when the database cannot be reached.
const READ_ATTEMPTS: u32 = 3;

/// Runs `read` again on [`Error::DatabaseUnavailable`], with backoff.
async fn retrying<T, F: std::future::Future<Output = Result<T>>>(
    read: impl Fn() -> F,
) -> Result<T> {
    let mut backoff = Duration::from_millis(25);
    let mut attempt = 1;
    loop {
        match read().await {
            Err(Error::DatabaseUnavailable(_)) if attempt < READ_ATTEMPTS => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// An unfiltered count's range split into the parts a bound cuts out of a
/// day (to be counted from the articles) and the whole UTC days between
/// them (from `day_counts`): `[from, to)` day numbers, `None` unbounded;
/// no whole days at all when the range lies inside one day.
#[allow(clippy::type_complexity)]
fn split_by_whole_days(range: DateRange) -> (Vec<DateRange>, Option<(Option<i64>, Option<i64>)>) {
    const DAY: i64 = 86_400;
    let midnight = |day: i64| Timestamp {
        seconds: day * DAY,
        nanos: 0,
    };
    let is_midnight = |t: Timestamp| t.nanos == 0 && t.seconds.rem_euclid(DAY) == 0;
    let day_of = |t: Timestamp| t.seconds.div_euclid(DAY);
    let mut cut = Vec::new();
    // The first whole day: the start's, when the start is its midnight.
    let from = range.start.map(|start| {
        if is_midnight(start) {
            day_of(start)
        } else {
            day_of(start) + 1
        }
    });
    // Days before the end's are whole (the end is exclusive).
    let to = range.end.map(day_of);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            // Inside one day: all of it is a cut.
            return (vec![range], None);
        }
    }
    if let (Some(start), Some(from)) = (range.start, from) {
        if !is_midnight(start) {
            cut.push(DateRange {
                start: Some(start),
                end: Some(midnight(from)),
            });
        }
    }
    if let (Some(end), Some(to)) = (range.end, to) {
        if !is_midnight(end) {
            cut.push(DateRange {
                start: Some(midnight(to)),
                end: Some(end),
            });
        }
    }
    (cut, Some((from, to)))
}

/// Why `id` has no live row: deleted (with when), or not found.
async fn missing(client: &Object, id: &ArticleId) -> Error {
    match query_opt(
        client,
        "SELECT sequence, deleted_s, deleted_ns FROM tombstones WHERE id = $1",
        &[&id.as_str()],
    )
    .await
    {
        Ok(Some(row)) => match timestamp(&row, 1, 2) {
            Ok(at) => Error::Deleted {
                id: id.to_string(),
                at,
                sequence: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            },
            Err(e) => e,
        },
        Ok(None) => Error::NotFound(id.to_string()),
        Err(e) => e,
    }
}

/// The last sequence number committed.
async fn read_head(client: &tokio_postgres::Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT last_sequence FROM feed_head", &[])
        .await
        .map_err(db_error)?
        .get(0))
}

/// A statement built from parts, with its parameters.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// `published_at` inside `range`.
    fn range(&mut self, range: DateRange) {
        if let Some(start) = range.start {
            let (s, ns) = (self.param(start.seconds), self.param(nanos(start)));
            self.push(&format!(" AND (published_s, published_ns) >= ({s}, {ns})"));
        }
        if let Some(end) = range.end {
            let (s, ns) = (self.param(end.seconds), self.param(nanos(end)));
            self.push(&format!(" AND (published_s, published_ns) < ({s}, {ns})"));
        }
    }

    /// Only articles that match `filter` (as [`Filter::matches`]).
    fn filter(&mut self, filter: &Filter) {
        for (column, values, overlap) in [
            ("source_lower", &filter.sources, false),
            ("section", &filter.sections, false),
            ("language", &filter.languages, false),
            ("tags", &filter.tags, true),
            ("authors", &filter.authors, true),
        ] {
            if values.is_empty() {
                continue;
            }
            let p = self.param(values.clone());
            if overlap {
                self.push(&format!(" AND {column} && {p}::text[]"));
            } else {
                self.push(&format!(" AND {column} = ANY({p}::text[])"));
            }
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The columns [`version_from_row`] reads, in its order; BASIC leaves the
/// body empty without reading it.
fn version_columns(with_body: bool) -> &'static str {
    if with_body {
        "id, revision, ingested_s, ingested_ns, content_sha256, url, title, body, \
         published_s, published_ns, authors, source, section, tags, language, description"
    } else {
        "id, revision, ingested_s, ingested_ns, content_sha256, url, title, ''::text AS body, \
         published_s, published_ns, authors, source, section, tags, language, description"
    }
}

/// How many columns [`version_columns`] selects.
const VERSION_COLUMN_COUNT: usize = 16;

/// A stored version from the columns of [`version_columns`] at `at`.
fn version_from_row(row: &Row, at: usize) -> Result<StoredArticle> {
    let sha: Vec<u8> = row.get(at + 4);
    Ok(StoredArticle {
        id: parse_id(row.get(at))?,
        revision: u64::try_from(row.get::<_, i64>(at + 1)).unwrap_or(0),
        ingested_at: timestamp(row, at + 2, at + 3)?,
        content_sha256: sha.try_into().map_err(|_| Error::Corrupt {
            key: "content_sha256".into(),
            reason: "not 32 bytes".into(),
        })?,
        content: ArticleContent {
            url: row.get(at + 5),
            title: row.get(at + 6),
            body: row.get(at + 7),
            published_at: timestamp(row, at + 8, at + 9)?,
            authors: row.get(at + 10),
            source: row.get(at + 11),
            section: row.get(at + 12),
            tags: row.get(at + 13),
            language: row.get(at + 14),
            description: row.get(at + 15),
        },
    })
}

fn parse_id(raw: &str) -> Result<ArticleId> {
    ArticleId::parse("id", raw).map_err(|e| Error::Corrupt {
        key: format!("articles/{raw:?}"),
        reason: e.to_string(),
    })
}

fn timestamp(row: &Row, seconds: usize, nanos: usize) -> Result<Timestamp> {
    let s: i64 = row.get(seconds);
    let ns: i32 = row.get(nanos);
    Ok(Timestamp {
        seconds: s,
        nanos: u32::try_from(ns)
            .ok()
            .filter(|n| *n <= 999_999_999)
            .ok_or_else(|| Error::Corrupt {
                key: "timestamp".into(),
                reason: format!("nanoseconds {ns} out of range"),
            })?,
    })
}

/// Nanoseconds as the schema keeps them (`integer`).
fn nanos(t: Timestamp) -> i32 {
    t.nanos as i32
}

/// A sequence number or revision as the schema keeps it (`bigint`).
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// About the encoded size of an article, as the sled engine estimates it.
fn estimated_size(article: &StoredArticle) -> usize {
    let c = &article.content;
    c.body.len()
        + c.title.len()
        + c.description.len()
        + c.url.len()
        + c.authors
            .iter()
            .chain(&c.tags)
            .map(|s| s.len() + 2)
            .sum::<usize>()
        + c.source.len()
        + c.section.len()
        + 128
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// Runs a query, mapping its error.
async fn query(
    client: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    // Prepared once per connection and kept: a Get is then one round trip,
    // not two. Statements differ only by which filters and bounds a read
    // has, so the cache stays small.
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query(&statement, params).await.map_err(db_error)
}

/// Runs a query that returns at most one row.
async fn query_opt(
    client: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    Ok(query(client, sql, params).await?.into_iter().next())
}

/// Whether an error means the database cannot be reached (as opposed to a
/// statement it refused).
fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No SQLSTATE: the connection itself failed (I/O, TLS, timeout).
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                if inner.is::<std::io::Error>() {
                    return true;
                }
                source = inner.source();
            }
            e.to_string().contains("timed out") || e.to_string().contains("connection")
        }
    }
}

/// The crate error for a PostgreSQL error.
pub(crate) fn db_error(e: tokio_postgres::Error) -> Error {
    if unreachable(&e) {
        Error::DatabaseUnavailable(with_causes(&e))
    } else {
        Error::Database(Arc::new(e))
    }
}

/// An error and its causes, one after another: tokio-postgres leaves the
/// cause out of its own text ("error performing TLS handshake" without the
/// certificate it refused).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The crate error for a pool that could not hand out a connection.
fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => db_error(e),
        PoolError::Timeout(kind) => Error::DatabaseUnavailable(format!(
            "no database connection came free in time ({kind:?})"
        )),
        PoolError::Closed => Error::Closed,
        other => Error::DatabaseUnavailable(other.to_string()),
    }
}

/// An article as the writer takes it, hashed here, on the caller's side.
pub(crate) fn put(article: Article, restore: Option<(u64, Timestamp)>) -> Op {
    let content_sha256 = article.content().sha256();
    let (id, content) = article.into_parts();
    Op::Put {
        id,
        content: Box::new(content),
        content_sha256,
        restore,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    proptest! {
        /// Counting the cut parts from the articles and the whole days from
        /// day counters gives exactly the articles in the range, for any
        /// bounds (either open, before 1970, inside one day, on midnights).
        #[test]
        fn whole_days_and_cuts_count_exactly_the_range(
            times in prop::collection::vec((-200_000i64..200_000, prop_oneof![Just(0u32), 0u32..1_000_000_000]), 0..60),
            start in prop::option::of((-200_000i64..200_000, prop_oneof![Just(0u32), 0u32..3])),
            end in prop::option::of((-200_000i64..200_000, prop_oneof![Just(0u32), 0u32..3])),
            snap in any::<(bool, bool)>(),
        ) {
            // Bounds on midnights often, as real queries have them.
            let bound = |b: Option<(i64, u32)>, snap: bool| b.map(|(s, n)| {
                if snap { at(s.div_euclid(86_400) * 86_400, 0) } else { at(s, n) }
            });
            let range = DateRange { start: bound(start, snap.0), end: bound(end, snap.1) };
            let times: Vec<Timestamp> = times.into_iter().map(|(s, n)| at(s, n)).collect();
            let expected = times.iter().filter(|t| range.contains(**t)).count();
            let (cuts, whole) = split_by_whole_days(range);
            let in_cuts = times.iter().filter(|t| cuts.iter().any(|c| c.contains(**t))).count();
            let in_whole = whole.map_or(0, |(from, to)| {
                times.iter().filter(|t| {
                    let day = t.seconds.div_euclid(86_400);
                    from.is_none_or(|f| day >= f) && to.is_none_or(|e| day < e)
                }).count()
            });
            // No article is counted twice.
            for t in &times {
                let day = t.seconds.div_euclid(86_400);
                let whole_has = whole.is_some_and(|(from, to)| from.is_none_or(|f| day >= f) && to.is_none_or(|e| day < e));
                prop_assert!(!(whole_has && cuts.iter().any(|c| c.contains(*t))));
            }
            prop_assert_eq!(in_cuts + in_whole, expected, "{:?} -> {:?} {:?}", range, cuts, whole);
        }
    }
}
