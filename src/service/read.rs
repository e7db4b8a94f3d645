//! The read RPCs: GetArticle and ListArticles, and the page reader that
//! ExportArticles shares.

use prost::Message;

use super::query::{ListQuery, View};
use crate::{
    article::ArticleId,
    error::Error,
    proto,
    store::{DateRange, Order, PageRequest, Position, Store},
};

/// Largest ListArticles response, the default receive limit of gRPC clients.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Room kept in a response for the page token and framing.
const RESPONSE_HEADROOM: usize = 16 * 1024;

/// GetArticle: the current version of one article.
pub(super) fn get(
    store: &Store,
    request: &proto::GetArticleRequest,
) -> Result<proto::GetArticleResponse, Error> {
    let id = ArticleId::parse("id", &request.id)?;
    let stored = store
        .get(&id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    Ok(proto::GetArticleResponse {
        article: Some(stored.into_proto(true)),
    })
}

/// ListArticles: one page, up to `page_size` articles and, so the response
/// stays under [`MAX_RESPONSE_BYTES`], fewer when they are large. A token is
/// returned only when another article follows. Blocking.
pub(super) fn list(store: &Store, query: &ListQuery) -> Result<proto::ListArticlesResponse, Error> {
    let page = read_page(
        store,
        query.range,
        query.order,
        query.after.as_ref(),
        query.page_size,
        MAX_RESPONSE_BYTES - RESPONSE_HEADROOM,
        query.view,
    )?;
    let next_page_token = match (page.more, page.last) {
        (true, Some(last)) => query.next_token(last, store.page_token_key()),
        _ => String::new(),
    };
    Ok(proto::ListArticlesResponse {
        articles: page.articles,
        next_page_token,
    })
}

/// Articles read in one go, and where the next read starts.
pub(super) struct Page {
    pub articles: Vec<proto::Article>,
    /// Position of the last article in `articles`.
    pub last: Option<Position>,
    /// Whether another article follows in the range.
    pub more: bool,
}

/// Reads up to `max_articles` articles strictly after `after`, stopping
/// before the encoded articles would pass `budget` bytes (but always taking
/// at least one, so a reader makes progress). The store stops at its own
/// estimate of the size; the exact encoded size is checked here, so a low
/// estimate can only end the page earlier. Blocking.
pub(super) fn read_page(
    store: &Store,
    range: DateRange,
    order: Order,
    after: Option<&Position>,
    max_articles: usize,
    budget: usize,
    view: View,
) -> Result<Page, Error> {
    let stored = store.page(&PageRequest {
        range,
        order,
        after: after.cloned(),
        limit: max_articles,
        with_body: view.with_body(),
        byte_budget: budget,
    })?;
    let mut articles = Vec::with_capacity(stored.articles.len());
    let mut bytes = 0;
    let mut last = None;
    let mut more = stored.more;
    for article in stored.articles {
        let position = Position {
            published_at: article.content.published_at,
            id: article.id.clone(),
        };
        let article = article.into_proto(view.with_body());
        let len = article.encoded_len();
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if bytes + framed > budget && !articles.is_empty() {
            more = true;
            break;
        }
        bytes += framed;
        articles.push(article);
        last = Some(position);
    }
    Ok(Page {
        articles,
        last,
        more,
    })
}
