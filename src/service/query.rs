//! Request parsing shared by the RPCs: ranges, orders, views, filters, page
//! sizes and page tokens become validated domain values here, once, so every
//! handler rejects the same input with the same message.

use crate::{
    article::{self, ArticleId, Timestamp, ValidationError},
    error::Error,
    page_token::{self, PageToken},
    proto::{self, ArticleView, SortOrder},
    store::{DateRange, Filter, Order, Position},
};

/// Most values in one field of a filter.
pub const MAX_FILTER_VALUES: usize = 32;
/// Longest deletion reason, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;

/// Page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// How much of each article an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every field but the body.
    Basic,
    /// Every field.
    Full,
}

impl View {
    /// Whether the body is included.
    pub fn with_body(self) -> bool {
        self == View::Full
    }
}

pub(super) fn invalid(field: &'static str, rule: &str) -> Error {
    Error::from(ValidationError {
        field,
        rule: rule.into(),
    })
}

/// `[start_time, end_time)`, either bound optional; a start after the end is
/// an error.
pub(super) fn parse_range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Result<DateRange, Error> {
    let range = DateRange {
        start: start
            .map(|ts| Timestamp::from_proto("start_time", ts))
            .transpose()?,
        end: end
            .map(|ts| Timestamp::from_proto("end_time", ts))
            .transpose()?,
    };
    if let (Some(start), Some(end)) = (range.start, range.end) {
        if start > end {
            return Err(invalid("start_time", "must not be after end_time"));
        }
    }
    Ok(range)
}

pub(super) fn parse_order(raw: i32) -> Result<Order, Error> {
    match SortOrder::try_from(raw) {
        Ok(SortOrder::Unspecified | SortOrder::OldestFirst) => Ok(Order::OldestFirst),
        Ok(SortOrder::NewestFirst) => Ok(Order::NewestFirst),
        Err(_) => Err(invalid("order", "is not a known SortOrder")),
    }
}

/// A view; `unspecified` is what an unset field means for this RPC.
pub(super) fn parse_view(raw: i32, unspecified: View) -> Result<View, Error> {
    match ArticleView::try_from(raw) {
        Ok(ArticleView::Unspecified) => Ok(unspecified),
        Ok(ArticleView::Basic) => Ok(View::Basic),
        Ok(ArticleView::Full) => Ok(View::Full),
        Err(_) => Err(invalid("view", "is not a known ArticleView")),
    }
}

/// 0 means [`DEFAULT_PAGE_SIZE`], more than [`MAX_PAGE_SIZE`] means the
/// maximum, negative is an error.
pub(super) fn parse_page_size(raw: i32) -> Result<usize, Error> {
    match usize::try_from(raw) {
        Err(_) => Err(invalid("page_size", "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// A filter: at most [`MAX_FILTER_VALUES`] values per field, each within
/// that field's limit on Article; sources lower-cased. Unset is empty.
pub fn parse_filter(raw: Option<&proto::ArticleFilter>) -> Result<Filter, Error> {
    let Some(raw) = raw else {
        return Ok(Filter::default());
    };
    let field = |name: &'static str, values: &[String], max: usize| -> Result<Vec<String>, Error> {
        if values.len() > MAX_FILTER_VALUES {
            return Err(invalid(
                name,
                &format!(
                    "must have at most {MAX_FILTER_VALUES} values, got {}",
                    values.len()
                ),
            ));
        }
        if let Some(long) = values.iter().find(|v| v.len() > max) {
            return Err(invalid(
                name,
                &format!("values must be at most {max} bytes, got {}", long.len()),
            ));
        }
        Ok(values.to_vec())
    };
    Ok(Filter {
        sources: field("filter.sources", &raw.sources, article::MAX_LABEL_BYTES)?
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        sections: field("filter.sections", &raw.sections, article::MAX_LABEL_BYTES)?,
        languages: field(
            "filter.languages",
            &raw.languages,
            article::MAX_LANGUAGE_BYTES,
        )?,
        tags: field("filter.tags", &raw.tags, article::MAX_LIST_ENTRY_BYTES)?,
        authors: field(
            "filter.authors",
            &raw.authors,
            article::MAX_LIST_ENTRY_BYTES,
        )?,
    })
}

/// A validated ListArticles request.
#[derive(Debug)]
pub struct ListQuery {
    /// Publication times to list.
    pub range: DateRange,
    /// Direction.
    pub order: Order,
    /// Where the page starts (strictly after); `None` on the first page.
    pub after: Option<Position>,
    /// Most articles in the page.
    pub page_size: usize,
    /// How much of each article.
    pub view: View,
    /// Which articles.
    pub filter: Filter,
    /// What its page tokens are bound to.
    pub fingerprint: [u8; 16],
}

impl ListQuery {
    /// Validates a request; a page token must be one this archive signed
    /// (`token_key`) for the same range and order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field, or
    /// [`Error::InvalidPageToken`].
    pub fn parse(
        request: &proto::ListArticlesRequest,
        token_key: &[u8; 32],
    ) -> Result<Self, Error> {
        let page_size = parse_page_size(request.page_size)?;
        let range = parse_range(request.start_time.as_ref(), request.end_time.as_ref())?;
        let order = parse_order(request.order)?;
        let view = parse_view(request.view, View::Basic)?;
        let filter = parse_filter(request.filter.as_ref())?;
        let fingerprint = page_token::fingerprint(
            page_token::Kind::Dates,
            &[
                &page_token::date_query_parts(order, range),
                &filter.canonical(),
            ],
        );
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.page_token, token_key)?.date_cursor(&fingerprint)?)
        };
        Ok(Self {
            range,
            order,
            after,
            page_size,
            view,
            filter,
            fingerprint,
        })
    }

    /// The token for the page after one that ended at `last`.
    pub fn next_token(&self, last: Position, token_key: &[u8; 32]) -> String {
        PageToken {
            kind: page_token::Kind::Dates,
            fingerprint: self.fingerprint,
            cursor: page_token::Cursor::Date(last),
        }
        .encode(token_key)
    }
}

/// A validated ListArticleRevisions request.
#[derive(Debug)]
pub struct RevisionsQuery {
    /// The article.
    pub id: ArticleId,
    /// Most revisions in the page.
    pub page_size: usize,
    /// Start strictly below this revision; `None` on the first page.
    pub before: Option<u64>,
    /// How much of each revision.
    pub view: View,
    fingerprint: [u8; 16],
}

impl RevisionsQuery {
    /// Validates a request; a page token must be one this archive signed
    /// for the same id and view.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field, or
    /// [`Error::InvalidPageToken`].
    pub fn parse(
        request: &proto::ListArticleRevisionsRequest,
        token_key: &[u8; 32],
    ) -> Result<Self, Error> {
        let id = ArticleId::parse("id", &request.id)?;
        let page_size = parse_page_size(request.page_size)?;
        let view = parse_view(request.view, View::Basic)?;
        let fingerprint = page_token::fingerprint(
            page_token::Kind::Revisions,
            &[id.as_str().as_bytes(), &[view.with_body() as u8]],
        );
        let before = if request.page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.page_token, token_key)?.revision_cursor(&fingerprint)?)
        };
        Ok(Self {
            id,
            page_size,
            before,
            view,
            fingerprint,
        })
    }

    /// The token for the page after one that ended at `revision`.
    pub fn next_token(&self, revision: u64, token_key: &[u8; 32]) -> String {
        PageToken {
            kind: page_token::Kind::Revisions,
            fingerprint: self.fingerprint,
            cursor: page_token::Cursor::Revision(revision),
        }
        .encode(token_key)
    }
}

/// A validated DeleteArticle request.
#[derive(Debug)]
pub struct DeleteQuery {
    /// The article.
    pub id: ArticleId,
    /// Why.
    pub reason: String,
    /// Whether it may come back.
    pub allow_reingest: bool,
}

impl DeleteQuery {
    /// Validates a request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id or a reason over
    /// [`MAX_REASON_BYTES`].
    pub fn parse(request: &proto::DeleteArticleRequest) -> Result<Self, Error> {
        let id = ArticleId::parse("id", &request.id)?;
        if request.reason.len() > MAX_REASON_BYTES {
            return Err(invalid(
                "reason",
                &format!(
                    "must be at most {MAX_REASON_BYTES} bytes, got {}",
                    request.reason.len()
                ),
            ));
        }
        Ok(Self {
            id,
            reason: request.reason.clone(),
            allow_reingest: request.allow_reingest,
        })
    }
}

/// A validated WatchChanges request.
#[derive(Debug)]
pub struct WatchQuery {
    /// Start strictly after this sequence number.
    pub after: u64,
    /// Stay open for new changes.
    pub follow: bool,
    /// How much of each article.
    pub view: View,
    /// Which CREATED and UPDATED changes.
    pub filter: Filter,
}

impl WatchQuery {
    /// Validates a request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed view or filter.
    pub fn parse(request: &proto::WatchChangesRequest) -> Result<Self, Error> {
        Ok(Self {
            after: request.after_sequence,
            follow: request.follow,
            view: parse_view(request.view, View::Basic)?,
            filter: parse_filter(request.filter.as_ref())?,
        })
    }
}

/// A validated ExportArticles request.
#[derive(Debug)]
pub struct ExportQuery {
    /// Publication times to export.
    pub range: DateRange,
    /// Direction.
    pub order: Order,
    /// Every revision of each article, not only the current one.
    pub all_revisions: bool,
    /// Which articles.
    pub filter: Filter,
    /// The last article a broken export delivered; the export goes on
    /// strictly after it.
    pub resume_after: Option<Position>,
}

impl ExportQuery {
    /// Validates a request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field: a bad range or order, or
    /// a resume position that is malformed or outside the range.
    pub fn parse(request: &proto::ExportArticlesRequest) -> Result<Self, Error> {
        let range = parse_range(request.start_time.as_ref(), request.end_time.as_ref())?;
        let order = parse_order(request.order)?;
        let resume_after = request
            .resume_after
            .as_ref()
            .map(|p| parse_resume_position(p, range))
            .transpose()?;
        Ok(Self {
            range,
            order,
            all_revisions: request.all_revisions,
            filter: parse_filter(request.filter.as_ref())?,
            resume_after,
        })
    }
}

/// The export resume position: a valid time and id inside the range.
fn parse_resume_position(
    position: &proto::ExportPosition,
    range: DateRange,
) -> Result<Position, Error> {
    let published_at = position
        .published_at
        .as_ref()
        .ok_or_else(|| invalid("resume_after.published_at", "is required"))
        .and_then(|ts| Ok(Timestamp::from_proto("resume_after.published_at", ts)?))?;
    let id = ArticleId::parse("resume_after.id", &position.id)?;
    if !range.contains(published_at) {
        return Err(invalid("resume_after", "is outside the requested range"));
    }
    Ok(Position { published_at, id })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        assert_eq!(parse_page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(parse_page_size(7).unwrap(), 7);
        assert_eq!(parse_page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(parse_page_size(-1)
            .unwrap_err()
            .to_string()
            .contains("page_size"));
    }

    #[test]
    fn a_range_may_not_end_before_it_starts() {
        assert!(parse_range(Some(&ts(10, 0)), Some(&ts(10, 0))).is_ok());
        let error = parse_range(Some(&ts(10, 1)), Some(&ts(10, 0))).unwrap_err();
        assert!(error.to_string().contains("start_time"), "{error}");
    }

    #[test]
    fn unknown_enum_values_name_their_field() {
        assert!(parse_order(9).unwrap_err().to_string().starts_with("order"));
        assert!(parse_view(9, View::Basic)
            .unwrap_err()
            .to_string()
            .starts_with("view"));
        assert_eq!(parse_view(0, View::Full).unwrap(), View::Full);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Any resume position through the real export parser: accepted only
        /// when it is a valid id and time inside the range, otherwise an
        /// error naming a resume_after field; never a panic.
        #[test]
        fn any_resume_position_parses_only_when_valid_and_in_range(
            id in "\\PC{0,200}", seconds in any::<i64>(), nanos in any::<i32>(),
            start in proptest::option::of(-100_000i64..100_000), span in 0i64..200_000,
        ) {
            let request = proto::ExportArticlesRequest {
                start_time: start.map(|s| ts(s, 0)),
                end_time: start.map(|s| ts(s + span, 0)),
                resume_after: Some(proto::ExportPosition { published_at: Some(ts(seconds, nanos)), id: id.clone() }),
                ..Default::default()
            };
            let valid_id = ArticleId::parse("id", &id).is_ok();
            let valid_time = Timestamp::from_proto("t", &ts(seconds, nanos)).ok();
            let inside = valid_time.is_some_and(|t| start.is_none_or(|s| {
                t >= Timestamp { seconds: s, nanos: 0 } && t < Timestamp { seconds: s + span, nanos: 0 }
            }));
            match ExportQuery::parse(&request) {
                Ok(query) => {
                    prop_assert!(valid_id && inside);
                    let position = query.resume_after.unwrap();
                    prop_assert_eq!(position.id.as_str(), id.as_str());
                    prop_assert_eq!(Some(position.published_at), valid_time);
                }
                Err(e) => {
                    prop_assert!(!(valid_id && inside), "rejected a valid position: {}", e);
                    prop_assert!(e.to_string().starts_with("resume_after"), "{}", e);
                }
            }
        }
    }
}

/// Most ids in one BatchGetArticles call (AIP-231 leaves the bound to the
/// service).
pub const MAX_BATCH_IDS: usize = 1000;

/// A validated BatchGetArticles request.
#[derive(Debug)]
pub struct BatchGetQuery {
    /// The ids, in request order, duplicates kept.
    pub ids: Vec<ArticleId>,
    /// How much of each article (FULL when unset).
    pub view: View,
}

impl BatchGetQuery {
    /// Validates a request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for more than [`MAX_BATCH_IDS`] ids or a
    /// malformed one (named with its position).
    pub fn parse(request: &proto::BatchGetArticlesRequest) -> Result<Self, Error> {
        if request.ids.len() > MAX_BATCH_IDS {
            return Err(invalid(
                "ids",
                &format!(
                    "must have at most {MAX_BATCH_IDS} ids, got {}",
                    request.ids.len()
                ),
            ));
        }
        let ids = request
            .ids
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                ArticleId::parse("ids", raw)
                    .map_err(|e| invalid("ids", &format!("id {i} ({raw:?}): {}", e.rule)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ids,
            view: parse_view(request.view, View::Full)?,
        })
    }
}

/// A validated ListArticlesByUrl request.
#[derive(Debug)]
pub struct UrlListQuery {
    /// What to match.
    pub query: crate::store::url_key::UrlQuery,
    /// Most articles in the page.
    pub page_size: usize,
    /// Start strictly after this url-index key; `None` on the first page.
    pub after: Option<Vec<u8>>,
    /// How much of each article.
    pub view: View,
    fingerprint: [u8; 16],
}

impl UrlListQuery {
    /// Validates a request; a page token must be one this archive signed
    /// for the same url, match and view.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field, or
    /// [`Error::InvalidPageToken`].
    pub fn parse(
        request: &proto::ListArticlesByUrlRequest,
        token_key: &[u8; 32],
    ) -> Result<Self, Error> {
        use crate::store::url_key::{UrlMatch, UrlQuery};
        let how = match proto::UrlMatch::try_from(request.r#match) {
            Ok(proto::UrlMatch::Exact) => UrlMatch::Exact,
            Ok(proto::UrlMatch::Prefix) => UrlMatch::Prefix,
            Ok(proto::UrlMatch::Host) => UrlMatch::Host,
            Ok(proto::UrlMatch::Domain) => UrlMatch::Domain,
            Ok(proto::UrlMatch::Unspecified) => {
                return Err(invalid(
                    "match",
                    "must be set: URL_MATCH_EXACT, URL_MATCH_PREFIX, URL_MATCH_HOST or URL_MATCH_DOMAIN",
                ))
            }
            Err(_) => return Err(invalid("match", "is not a known UrlMatch")),
        };
        if request.url.len() > article::MAX_URL_BYTES {
            return Err(invalid(
                "url",
                &format!(
                    "must be at most {} bytes, got {}",
                    article::MAX_URL_BYTES,
                    request.url.len()
                ),
            ));
        }
        let query = UrlQuery::new(&request.url, how).ok_or_else(|| {
            if request.url.is_empty() {
                invalid("url", "must not be empty")
            } else if matches!(how, UrlMatch::Host | UrlMatch::Domain) {
                invalid("url", "must be a url or host name with a host")
            } else {
                invalid("url", "must be an absolute http(s) URL with a host")
            }
        })?;
        let page_size = parse_page_size(request.page_size)?;
        let view = parse_view(request.view, View::Basic)?;
        let mut parts = Vec::new();
        for prefix in &query.prefixes {
            parts.extend_from_slice(prefix.as_bytes());
            parts.push(0);
        }
        let fingerprint = page_token::fingerprint(
            page_token::Kind::Urls,
            &[
                &parts,
                query.scheme.as_deref().unwrap_or("").as_bytes(),
                &[how as u8, u8::from(query.whole), u8::from(view.with_body())],
            ],
        );
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.page_token, token_key)?.url_cursor(&fingerprint)?)
        };
        Ok(Self {
            query,
            page_size,
            after,
            view,
            fingerprint,
        })
    }

    /// The token for the page after one that ended at url-index key `last`.
    pub fn next_token(&self, last: Vec<u8>, token_key: &[u8; 32]) -> String {
        PageToken {
            kind: page_token::Kind::Urls,
            fingerprint: self.fingerprint,
            cursor: page_token::Cursor::UrlKey(last),
        }
        .encode(token_key)
    }
}

/// A validated CountArticles request.
#[derive(Debug)]
pub struct CountQuery {
    /// Publication times to count.
    pub range: DateRange,
    /// Bucket length.
    pub interval: crate::store::calendar::Interval,
    /// Which articles.
    pub filter: Filter,
}

impl CountQuery {
    /// Validates a request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field.
    pub fn parse(request: &proto::CountArticlesRequest) -> Result<Self, Error> {
        use crate::store::calendar::Interval;
        let interval =
            match proto::CountInterval::try_from(request.interval) {
                Ok(proto::CountInterval::Day) => Interval::Day,
                Ok(proto::CountInterval::Month) => Interval::Month,
                Ok(proto::CountInterval::Year) => Interval::Year,
                Ok(proto::CountInterval::Unspecified) => return Err(invalid(
                    "interval",
                    "must be set: COUNT_INTERVAL_DAY, COUNT_INTERVAL_MONTH or COUNT_INTERVAL_YEAR",
                )),
                Err(_) => return Err(invalid("interval", "is not a known CountInterval")),
            };
        Ok(Self {
            range: parse_range(request.start_time.as_ref(), request.end_time.as_ref())?,
            interval,
            filter: parse_filter(request.filter.as_ref())?,
        })
    }
}
