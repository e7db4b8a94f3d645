//! ExportArticles: a flow-controlled stream of a whole date range.

use prost::Message;
use tokio::sync::watch;
use tonic::{Code, Status};

use super::{
    outbox::{outbox, Outbox, OutboxStream},
    query::{ExportQuery, View},
    read::read_page,
    stopped,
};
use crate::{proto, store::Store};

/// Articles an export reads from the store in one go, at most.
const EXPORT_CHUNK_ARTICLES: usize = 64;
/// Bytes an export reads from the store in one go, about.
const EXPORT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of articles that may wait for the transport. With the chunk in
/// hand, an export holds at most about 8 MiB of a slow client's articles.
const EXPORT_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// The outbox of one export stream.
pub(super) fn export_outbox() -> (
    Outbox<proto::ExportArticlesResponse>,
    OutboxStream<proto::ExportArticlesResponse>,
) {
    outbox(EXPORT_CHUNK_ARTICLES, EXPORT_QUEUED_BYTES)
}

/// Feeds an export stream chunk by chunk. Each chunk is read off the async
/// workers and queued one article at a time; the next chunk is read only
/// once the outbox has room again, so a slow client slows the export. Returns
/// the final code and how many articles were sent.
pub(super) async fn run_export(
    query: ExportQuery,
    store: Store,
    out: &Outbox<proto::ExportArticlesResponse>,
    mut stop: watch::Receiver<bool>,
) -> (Code, u64) {
    let mut after = query.resume_after;
    let mut sent = 0u64;
    loop {
        let (store, range, order, from) = (store.clone(), query.range, query.order, after.clone());
        let chunk = tokio::task::spawn_blocking(move || {
            read_page(
                &store,
                range,
                order,
                from.as_ref(),
                EXPORT_CHUNK_ARTICLES,
                EXPORT_CHUNK_BYTES,
                View::Full,
            )
        })
        .await
        .map_err(|e| Status::internal(format!("export task failed: {e}")))
        .and_then(|page| page.map_err(Status::from));
        let page = match chunk {
            Ok(page) => page,
            Err(status) => {
                let code = status.code();
                out.end(status).await;
                return (code, sent);
            }
        };
        for article in page.articles {
            let response = proto::ExportArticlesResponse {
                article: Some(article),
            };
            let bytes = response.encoded_len();
            let send = out.send(response, bytes);
            tokio::select! {
                biased;
                () = stopped(&mut stop) => {
                    out.end(Status::unavailable(
                        "the server is shutting down; resume the export after the last article received",
                    )).await;
                    return (Code::Unavailable, sent);
                }
                result = send => if result.is_err() { return (Code::Cancelled, sent) },
            }
            sent += 1;
        }
        if !page.more {
            return (Code::Ok, sent);
        }
        after = page.last;
    }
}
