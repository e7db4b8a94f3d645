//! The read RPCs: GetArticle, BatchGetArticles, ListArticles,
//! ListArticlesByUrl, ListArticleRevisions, CountArticles, and the page
//! reader that ExportArticles shares.

use prost::Message;

use super::query::{BatchGetQuery, CountQuery, ListQuery, RevisionsQuery, UrlListQuery, View};
use crate::{
    article::ArticleId,
    error::Error,
    proto,
    store::{DateRange, Filter, Order, PageRequest, Position, Store, UrlPageRequest},
};

/// Largest response, the default receive limit of gRPC clients.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Room kept in a response for the page token and framing.
const RESPONSE_HEADROOM: usize = 16 * 1024;

/// GetArticle: the current version of one article, or the revision asked
/// for.
pub(super) async fn get(
    store: &Store,
    request: &proto::GetArticleRequest,
) -> Result<proto::GetArticleResponse, Error> {
    let id = ArticleId::parse("id", &request.id)?;
    let stored = store.get_revision(&id, request.revision).await?;
    Ok(proto::GetArticleResponse {
        article: Some(stored.into_proto(true)),
    })
}

/// ListArticles: one page, up to `page_size` articles and, so the response
/// stays under [`MAX_RESPONSE_BYTES`], fewer when they are large. A token is
/// returned only when another article may follow.
pub(super) async fn list(
    store: &Store,
    query: &ListQuery,
) -> Result<proto::ListArticlesResponse, Error> {
    let page = read_page(
        store,
        &PageSpec {
            range: query.range,
            order: query.order,
            filter: &query.filter,
            max_articles: query.page_size,
            budget: MAX_RESPONSE_BYTES - RESPONSE_HEADROOM,
            view: query.view,
        },
        query.after.as_ref(),
    )
    .await?;
    let next_page_token = match (page.more, page.resume_after) {
        (true, Some(last)) => query.next_token(last, store.page_token_key()),
        _ => String::new(),
    };
    Ok(proto::ListArticlesResponse {
        articles: page.articles,
        next_page_token,
    })
}

/// ListArticleRevisions: one page of an article's history, newest first,
/// within the same size rules as ListArticles.
pub(super) async fn revisions(
    store: &Store,
    query: &RevisionsQuery,
) -> Result<proto::ListArticleRevisionsResponse, Error> {
    let page = store
        .revisions(
            &query.id,
            query.before,
            query.page_size,
            query.view.with_body(),
        )
        .await?;
    let budget = MAX_RESPONSE_BYTES - RESPONSE_HEADROOM;
    let mut revisions = Vec::with_capacity(page.revisions.len());
    let mut bytes = 0;
    let mut more = page.more;
    for stored in page.revisions {
        let revision = stored.into_proto(query.view.with_body());
        let framed = framed_len(&revision);
        if bytes + framed > budget && !revisions.is_empty() {
            more = true;
            break;
        }
        bytes += framed;
        revisions.push(revision);
    }
    let next_page_token = match (more, revisions.last()) {
        (true, Some(last)) => query.next_token(last.revision, store.page_token_key()),
        _ => String::new(),
    };
    Ok(proto::ListArticleRevisionsResponse {
        revisions,
        next_page_token,
    })
}

fn framed_len(message: &impl Message) -> usize {
    let len = message.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// What one page reads.
pub(super) struct PageSpec<'a> {
    pub range: DateRange,
    pub order: Order,
    pub filter: &'a Filter,
    pub max_articles: usize,
    /// Bytes the encoded articles may take.
    pub budget: usize,
    pub view: View,
}

/// Articles read in one go, and where the next read starts.
pub(super) struct Page {
    pub articles: Vec<proto::Article>,
    /// The last place examined; the next page starts strictly after it.
    pub resume_after: Option<Position>,
    /// Whether another article may follow in the range.
    pub more: bool,
}

/// Reads up to `spec.max_articles` articles strictly after `after`, stopping
/// before the encoded articles would pass `spec.budget` bytes (but always
/// taking at least one, so a reader makes progress). The store stops at its
/// own estimate of the size; the exact encoded size is checked here, so a
/// low estimate can only end the page earlier.
pub(super) async fn read_page(
    store: &Store,
    spec: &PageSpec<'_>,
    after: Option<&Position>,
) -> Result<Page, Error> {
    let stored = store
        .page(PageRequest {
            range: spec.range,
            order: spec.order,
            after: after.cloned(),
            limit: spec.max_articles,
            with_body: spec.view.with_body(),
            byte_budget: spec.budget,
            filter: spec.filter.clone(),
        })
        .await?;
    let mut articles: Vec<proto::Article> = Vec::with_capacity(stored.articles.len());
    let mut bytes = 0;
    // The date of the last article taken; its id is in `articles`.
    let mut last_published_at = None;
    for article in stored.articles {
        let published_at = article.content.published_at;
        let article = article.into_proto(spec.view.with_body());
        let framed = framed_len(&article);
        if let (true, Some(last), Some(last_date)) = (
            bytes + framed > spec.budget,
            articles.last(),
            last_published_at,
        ) {
            // Cut here, not where the store stopped: the next page starts
            // after the last article sent. (Its id is parsed again only
            // here, rather than copied for every article.)
            let id = ArticleId::parse("id", &last.id)?;
            return Ok(Page {
                articles,
                resume_after: Some(Position {
                    published_at: last_date,
                    id,
                }),
                more: true,
            });
        }
        bytes += framed;
        articles.push(article);
        last_published_at = Some(published_at);
    }
    Ok(Page {
        articles,
        resume_after: stored.resume_after,
        more: stored.more,
    })
}

/// Ids named in a NOT_FOUND message, at most.
const MISSING_NAMED: usize = 10;

/// BatchGetArticles: every article or none (AIP-231).
pub(super) async fn batch_get(
    store: &Store,
    query: &BatchGetQuery,
) -> Result<proto::BatchGetArticlesResponse, Error> {
    // Each id read once, however often it is asked for.
    let mut unique: Vec<ArticleId> = query.ids.clone();
    unique.sort();
    unique.dedup();
    let found = store
        .batch_get(unique.clone(), query.view.with_body())
        .await?;
    let missing: Vec<&ArticleId> = unique
        .iter()
        .zip(&found)
        .filter(|(_, article)| article.is_none())
        .map(|(id, _)| id)
        .collect();
    if !missing.is_empty() {
        let first = query.ids.iter().filter(|id| missing.contains(id)).fold(
            Vec::new(),
            |mut named: Vec<String>, id| {
                if named.len() < MISSING_NAMED && !named.contains(&id.to_string()) {
                    named.push(id.to_string());
                }
                named
            },
        );
        return Err(Error::MissingArticles {
            first,
            total: missing.len(),
        });
    }
    let by_id: std::collections::HashMap<&ArticleId, proto::Article> = unique
        .iter()
        .zip(found)
        .filter_map(|(id, article)| article.map(|a| (id, a.into_proto(query.view.with_body()))))
        .collect();
    let articles: Vec<proto::Article> = query.ids.iter().map(|id| by_id[id].clone()).collect();
    let bytes: usize = articles.iter().map(framed_len).sum();
    if bytes > MAX_RESPONSE_BYTES - RESPONSE_HEADROOM {
        return Err(Error::ResponseTooLarge {
            articles: articles.len(),
            bytes,
            limit: MAX_RESPONSE_BYTES,
        });
    }
    Ok(proto::BatchGetArticlesResponse { articles })
}

/// ListArticlesByUrl: one page of matches.
pub(super) async fn by_url(
    store: &Store,
    query: &UrlListQuery,
) -> Result<proto::ListArticlesByUrlResponse, Error> {
    let page = store
        .by_url(UrlPageRequest {
            query: query.query.clone(),
            after: query.after.clone(),
            limit: query.page_size,
            with_body: query.view.with_body(),
            byte_budget: MAX_RESPONSE_BYTES - RESPONSE_HEADROOM,
        })
        .await?;
    let articles: Vec<proto::Article> = page
        .articles
        .into_iter()
        .map(|a| a.into_proto(query.view.with_body()))
        .collect();
    let next_page_token = match (page.more, page.resume_after) {
        (true, Some(last)) => query.next_token(last, store.page_token_key()),
        _ => String::new(),
    };
    Ok(proto::ListArticlesByUrlResponse {
        articles,
        next_page_token,
    })
}

/// CountArticles.
pub(super) async fn count(
    store: &Store,
    query: &CountQuery,
) -> Result<proto::CountArticlesResponse, Error> {
    let buckets = store
        .count(query.range, query.interval, query.filter.clone())
        .await?;
    let total = buckets.iter().map(|b| b.count).sum();
    Ok(proto::CountArticlesResponse {
        buckets: buckets
            .into_iter()
            .map(|b| proto::CountBucket {
                start_time: Some(b.start.to_proto()),
                count: b.count,
            })
            .collect(),
        total,
    })
}
