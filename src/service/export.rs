//! ExportArticles: a flow-controlled stream of a whole date range.

use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};

use super::{
    query::{ExportQuery, View},
    read::read_page,
    stopped,
};
use crate::{proto, store::Store};

/// Articles an export reads ahead of its reader, at most; with
/// [`EXPORT_CHUNK_BYTES`] this bounds an export's memory.
pub(super) const EXPORT_CHUNK_ARTICLES: usize = 64;
/// Bytes an export reads ahead of its reader, about.
const EXPORT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Feeds an export stream chunk by chunk. Each chunk is read off the async
/// workers and sent one article at a time; the next chunk is read only when
/// the channel (and so the client) has taken the previous one. Returns the
/// final code and how many articles were sent.
pub(super) async fn run_export(
    query: ExportQuery,
    store: Store,
    out: &mpsc::Sender<Result<proto::ExportArticlesResponse, Status>>,
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
                let _ = out.send(Err(status)).await;
                return (code, sent);
            }
        };
        for article in page.articles {
            let send = out.send(Ok(proto::ExportArticlesResponse {
                article: Some(article),
            }));
            tokio::select! {
                biased;
                () = stopped(&mut stop) => {
                    let _ = out.send(Err(Status::unavailable(
                        "the server is shutting down; resume the export after the last article received",
                    ))).await;
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
