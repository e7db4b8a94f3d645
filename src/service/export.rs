//! ExportArticles: a flow-controlled stream of a whole date range.

use prost::Message;
use tokio::sync::watch;
use tonic::{Code, Status};

use super::{
    outbox::{outbox, Outbox, OutboxStream},
    query::{ExportQuery, View},
    read::{read_page, PageSpec},
    stopped,
};
use crate::{article::ArticleId, error::Error, proto, store::Store};

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
/// once the outbox has room again, so a slow client slows the export. With
/// `all_revisions`, each article of a chunk is followed by nothing else
/// until its whole history, oldest first, is queued. Returns the final code
/// and how many articles (revisions) were sent.
pub(super) async fn run_export(
    query: ExportQuery,
    store: Store,
    out: &Outbox<proto::ExportArticlesResponse>,
    mut stop: watch::Receiver<bool>,
) -> (Code, u64) {
    let mut after = query.resume_after;
    let mut sent = 0u64;
    loop {
        let chunk = async {
            let mut page = read_page(
                &store,
                &PageSpec {
                    range: query.range,
                    order: query.order,
                    filter: &query.filter,
                    max_articles: EXPORT_CHUNK_ARTICLES,
                    budget: EXPORT_CHUNK_BYTES,
                    view: View::Full,
                },
                after.as_ref(),
            )
            .await?;
            if query.all_revisions {
                page.articles = with_history(&store, page.articles).await?;
            }
            Ok::<_, Error>(page)
        }
        .await
        .map_err(Status::from);
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
        after = page.resume_after;
    }
}

/// Each current version preceded by its older revisions, oldest first.
async fn with_history(
    store: &Store,
    current: Vec<proto::Article>,
) -> Result<Vec<proto::Article>, Error> {
    let mut out = Vec::with_capacity(current.len());
    for article in current {
        let id = ArticleId::parse("id", &article.id)?;
        let older = match store
            .revisions(&id, Some(article.revision), usize::MAX, true)
            .await
        {
            Ok(older) => older,
            // Deleted since the page was read: gone from the export too.
            Err(Error::NotFound(_) | Error::Deleted { .. }) => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            older
                .revisions
                .into_iter()
                .rev()
                .map(|stored| stored.into_proto(true)),
        );
        out.push(article);
    }
    Ok(out)
}
