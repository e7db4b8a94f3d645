//! IngestArticles: validate each request, queue valid articles for the
//! store's writer, and answer every request once, in order, when its
//! article is durable or rejected.
//!
//! Two tasks per stream: the reader validates and submits (waiting when the
//! writer's queue is full), the acknowledger waits for each outcome in
//! request order. Between them at most [`INGEST_WINDOW`] answers wait, so a
//! client that never reads its responses stops being read, and HTTP/2 flow
//! control holds it back.

use std::{sync::Arc, time::Instant};

use tokio::sync::{mpsc, watch};
use tonic::{Code, Status, Streaming};
use tracing::info;

use super::stopped;
use crate::{
    article::{Article, ArticleId, Timestamp, ValidationError},
    metrics::Metrics,
    proto::{self, IngestOutcome},
    store::{PendingWrite, Store, WriteOutcome},
};

/// Articles of one ingest stream that may await their acknowledgement at
/// once. Past this the server stops reading the stream, so a client that
/// never reads its responses is held back by HTTP/2 flow control instead of
/// filling the server's memory.
pub const INGEST_WINDOW: usize = 1024;

/// One request's answer, possibly still waiting for the writer.
pub(super) enum Pending {
    Ready(proto::IngestArticlesResponse),
    Waiting {
        index: u64,
        id: ArticleId,
        write: PendingWrite,
    },
    /// The stream ends here with this status.
    End(Status),
}

/// Reads requests, validates each, and queues valid articles for the writer.
/// Answers go to `pending` in request order.
pub(super) async fn read_requests(
    mut inbound: Streaming<proto::IngestArticlesRequest>,
    store: Store,
    pending: mpsc::Sender<Pending>,
    mut stop: watch::Receiver<bool>,
    metrics: Option<Arc<Metrics>>,
) {
    let mut index = 0u64;
    loop {
        let message = tokio::select! {
            biased;
            () = stopped(&mut stop) => {
                let _ = pending.send(Pending::End(Status::unavailable(
                    "the server is shutting down; articles without a response were not stored",
                ))).await;
                return;
            }
            message = inbound.message() => message,
        };
        let next = match message {
            Ok(Some(request)) => match parse(request) {
                Err(invalid) => {
                    // The writer counts the outcomes of what reaches it.
                    if let Some(metrics) = &metrics {
                        metrics.rejected_invalid();
                    }
                    Pending::Ready(rejected(index, &invalid.to_string()))
                }
                Ok((article, restore)) => {
                    let id = article.id().clone();
                    let submitted = match restore {
                        None => store.submit(article).await,
                        Some((revision, ingested_at)) => {
                            store.restore(article, revision, ingested_at).await
                        }
                    };
                    match submitted {
                        Ok(write) => Pending::Waiting { index, id, write },
                        Err(e) => Pending::End(e.into()),
                    }
                }
            },
            Ok(None) => return,
            Err(status) => Pending::End(status),
        };
        let ends = matches!(next, Pending::End(_));
        if pending.send(next).await.is_err() || ends {
            return;
        }
        index += 1;
    }
}

/// A request's article, validated, and the revision and time to restore it
/// as when `restore_revision` is set.
fn parse(
    request: proto::IngestArticlesRequest,
) -> Result<(Article, Option<(u64, Timestamp)>), ValidationError> {
    let raw = request.article.ok_or_else(|| ValidationError {
        field: "article",
        rule: "is required".into(),
    })?;
    let restore = if request.restore_revision {
        if raw.revision == 0 {
            return Err(ValidationError {
                field: "revision",
                rule: "must be 1 or more to restore a revision".into(),
            });
        }
        let ingested_at = raw
            .ingested_at
            .as_ref()
            .ok_or_else(|| ValidationError {
                field: "ingested_at",
                rule: "is required to restore a revision".into(),
            })
            .and_then(|ts| Timestamp::from_proto("ingested_at", ts))?;
        Some((raw.revision, ingested_at))
    } else {
        None
    };
    Ok((Article::from_proto(raw)?, restore))
}

/// Sends each answer once it is final, in request order, and ends the stream
/// after the first error.
pub(super) async fn acknowledge_in_order(
    mut pending: mpsc::Receiver<Pending>,
    out: &mpsc::Sender<Result<proto::IngestArticlesResponse, Status>>,
    started: Instant,
) {
    let mut code = Code::Ok;
    let mut acknowledged = 0u64;
    while let Some(next) = pending.recv().await {
        let answer = match next {
            Pending::Ready(response) => Ok(response),
            Pending::Waiting { index, id, write } => write
                .outcome()
                .await
                .map_err(Status::from)
                .and_then(|outcome| {
                    let (outcome, error) = match outcome {
                        WriteOutcome::Created => (IngestOutcome::Created, String::new()),
                        WriteOutcome::Updated => (IngestOutcome::Updated, String::new()),
                        WriteOutcome::Unchanged => (IngestOutcome::Unchanged, String::new()),
                        WriteOutcome::Rejected(why) => (IngestOutcome::Rejected, why),
                        WriteOutcome::Deleted { .. } => {
                            return Err(Status::internal(
                                "the store answered an ingest with a deletion",
                            ))
                        }
                    };
                    Ok(proto::IngestArticlesResponse {
                        index,
                        id: id.to_string(),
                        outcome: outcome as i32,
                        error,
                    })
                }),
            Pending::End(status) => Err(status),
        };
        let failed = answer.as_ref().err().map(Status::code);
        if out.send(answer).await.is_err() {
            code = Code::Cancelled;
            break;
        }
        if let Some(failed) = failed {
            code = failed;
            break;
        }
        acknowledged += 1;
    }
    info!(
        ?code,
        acknowledged,
        latency_ms = super::round_ms(started.elapsed()),
        "rpc finished"
    );
}

/// A REJECTED answer. The id is left empty: an invalid article may not have
/// one that can be trusted.
fn rejected(index: u64, why: &str) -> proto::IngestArticlesResponse {
    proto::IngestArticlesResponse {
        index,
        id: String::new(),
        outcome: IngestOutcome::Rejected as i32,
        error: why.to_owned(),
    }
}
