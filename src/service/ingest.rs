//! IngestArticles: validate each request, queue valid articles for the
//! store's writer, and answer every request once, in order, when its
//! article is durable or rejected.
//!
//! Two tasks per stream: the reader validates and submits (waiting when the
//! writer's queue is full), the acknowledger waits for each outcome in
//! request order. Between them at most [`INGEST_WINDOW`] answers wait, so a
//! client that never reads its responses stops being read, and HTTP/2 flow
//! control holds it back.

use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tonic::{Code, Status, Streaming};
use tracing::info;

use super::stopped;
use crate::{
    article::{Article, ArticleId, ValidationError},
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
            Ok(Some(request)) => match request.article.map(Article::from_proto) {
                None => Pending::Ready(rejected(
                    index,
                    &ValidationError {
                        field: "article",
                        rule: "is required".into(),
                    },
                )),
                Some(Err(invalid)) => Pending::Ready(rejected(index, &invalid)),
                Some(Ok(article)) => {
                    let id = article.id().clone();
                    match store.submit(article).await {
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
            Pending::Waiting { index, id, write } => {
                write.outcome().await.map_err(Status::from).map(|outcome| {
                    proto::IngestArticlesResponse {
                        index,
                        id: id.to_string(),
                        outcome: match outcome {
                            WriteOutcome::Created => IngestOutcome::Created,
                            WriteOutcome::Updated => IngestOutcome::Updated,
                            WriteOutcome::Unchanged => IngestOutcome::Unchanged,
                        } as i32,
                        error: String::new(),
                    }
                })
            }
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
fn rejected(index: u64, why: &ValidationError) -> proto::IngestArticlesResponse {
    proto::IngestArticlesResponse {
        index,
        id: String::new(),
        outcome: IngestOutcome::Rejected as i32,
        error: why.to_string(),
    }
}
