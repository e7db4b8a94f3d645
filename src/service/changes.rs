//! WatchChanges: the archive's change feed, read from the record log in
//! sequence order, and followed as new changes become durable.
//!
//! A watcher reads a chunk of changes off the async workers, queues it in
//! its outbox (bounded by messages and bytes, like an export), and reads the
//! next chunk only when the outbox has room: a slow watcher slows only
//! itself, and holds at most one chunk and one outbox of changes. A follower
//! that has caught up waits on the store's durable mark, which the writer
//! moves after each filesystem sync, so it only ever sees acknowledged
//! changes. When the server begins to shut down, followers end at once with
//! UNAVAILABLE, naming the sequence to resume after.

use tokio::sync::watch;
use tonic::{Code, Status};

use super::{
    outbox::{outbox, Outbox, OutboxStream},
    query::WatchQuery,
    stopped,
};
use crate::{
    metrics::WatchCursor,
    proto::{self, ChangeKind as ProtoChangeKind},
    store::{Change, ChangeKind, ChangesRequest, Store},
};

/// Changes a watcher reads from the store in one go, at most.
const CHUNK_CHANGES: usize = 64;
/// Bytes of changes a watcher reads in one go, about.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes of changes that may wait for the transport: with the chunk in hand,
/// a watcher holds at most about 2 MiB.
const QUEUED_BYTES: usize = 1024 * 1024;

/// The outbox of one watcher.
pub(super) fn watch_outbox() -> (
    Outbox<proto::WatchChangesResponse>,
    OutboxStream<proto::WatchChangesResponse>,
) {
    outbox(CHUNK_CHANGES, QUEUED_BYTES)
}

/// Feeds one watcher until the history is sent (without follow), or the
/// client goes away or the server shuts down (with follow). Returns the
/// final code and how many changes were sent. `cursor_metric`, when
/// given, follows how far it got, for the metrics.
pub(super) async fn run_watch(
    query: WatchQuery,
    store: Store,
    out: &Outbox<proto::WatchChangesResponse>,
    mut draining: watch::Receiver<bool>,
    cursor_metric: Option<&WatchCursor>,
) -> (Code, u64) {
    let mut durable = store.durable_sequence();
    let mut cursor = query.after;
    let mut sent = 0u64;
    loop {
        let request = ChangesRequest {
            after: cursor,
            limit: CHUNK_CHANGES,
            byte_budget: CHUNK_BYTES,
            with_body: query.view.with_body(),
            filter: query.filter.clone(),
        };
        let page = match store.changes(request).await {
            Ok(page) => page,
            Err(e) => {
                let status = Status::from(e);
                let code = status.code();
                out.end(status).await;
                return (code, sent);
            }
        };
        for change in page.changes {
            let sequence = change.sequence;
            let response = to_proto(change);
            let bytes = prost::Message::encoded_len(&response);
            tokio::select! {
                biased;
                () = stopped(&mut draining) => {
                    out.end(shutting_down(cursor)).await;
                    return (Code::Unavailable, sent);
                }
                result = out.send(response, bytes) => if result.is_err() {
                    return (Code::Cancelled, sent);
                },
            }
            cursor = sequence;
            sent += 1;
            if let Some(metric) = cursor_metric {
                metric.advance(cursor);
            }
        }
        cursor = cursor.max(page.resume_after);
        if let Some(metric) = cursor_metric {
            metric.advance(cursor);
        }
        if !page.reached_end {
            continue;
        }
        if !query.follow {
            return (Code::Ok, sent);
        }
        // Caught up: wait for a newer durable change.
        while durable.current() <= cursor {
            tokio::select! {
                biased;
                () = stopped(&mut draining) => {
                    out.end(shutting_down(cursor)).await;
                    return (Code::Unavailable, sent);
                }
                () = out.closed() => return (Code::Cancelled, sent),
                changed = durable.changed() => if changed.is_err() {
                    out.end(shutting_down(cursor)).await;
                    return (Code::Unavailable, sent);
                },
            }
        }
    }
}

fn shutting_down(cursor: u64) -> Status {
    Status::unavailable(format!(
        "the server is shutting down; watch again with after_sequence = {cursor} (the last change \
         sent) to carry on"
    ))
}

fn to_proto(change: Change) -> proto::WatchChangesResponse {
    proto::WatchChangesResponse {
        sequence: change.sequence,
        kind: match change.kind {
            ChangeKind::Created => ProtoChangeKind::Created,
            ChangeKind::Updated => ProtoChangeKind::Updated,
            ChangeKind::Deleted => ProtoChangeKind::Deleted,
        } as i32,
        id: change.id.to_string(),
        article: change.article.map(|article| {
            let with_body = !article.content.body.is_empty();
            article.into_proto(with_body)
        }),
        changed_at: Some(change.changed_at.to_proto()),
        reason: change.reason,
    }
}
