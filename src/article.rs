//! The domain article: validation, id derivation and the content hash.
//!
//! An [`Article`] can only be built by [`Article::from_proto`], which checks
//! every rule once, at the service boundary; the store accepts nothing else.
//! Text is kept byte for byte: nothing here trims or re-encodes a field.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::proto;

/// Largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest title accepted, in bytes.
pub const MAX_TITLE_BYTES: usize = 4096;
/// Largest url accepted, in bytes.
pub const MAX_URL_BYTES: usize = 4096;
/// Largest source or section accepted, in bytes.
pub const MAX_LABEL_BYTES: usize = 512;
/// Largest description accepted, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Most authors, and most tags, accepted on one article.
pub const MAX_LIST_ENTRIES: usize = 256;
/// Largest author name or tag accepted, in bytes.
pub const MAX_LIST_ENTRY_BYTES: usize = 512;
/// Largest language tag accepted, in bytes.
pub const MAX_LANGUAGE_BYTES: usize = 64;
/// Longest id accepted, in characters (ids are ASCII, so also bytes).
pub const MAX_ID_CHARS: usize = 128;

/// Query parameters dropped from a url before an id is derived from it: they
/// say where a reader came from, not which article it is.
const TRACKING_PARAMETERS: &[&str] = &[
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "mc_cid", "mc_eid", "yclid",
    "igshid", "_ga", "_gl",
];

/// An input that breaks a rule: the field it is in and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The offending field, as named in the protobuf contract.
    pub field: &'static str,
    /// The rule it breaks, in words a user can act on.
    pub rule: String,
}

impl ValidationError {
    /// A rule `field` breaks.
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

impl std::error::Error for ValidationError {}

/// A valid article id: 1-128 characters of `[A-Za-z0-9._~-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArticleId(String);

impl ArticleId {
    /// Checks `raw` against the id rule.
    ///
    /// # Errors
    /// A [`ValidationError`] on `field` when `raw` is empty, too long or has a
    /// character outside the allowed set.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if raw.len() > MAX_ID_CHARS {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_ID_CHARS} characters"),
            ));
        }
        if let Some(bad) = raw.chars().find(|c| !is_id_char(*c)) {
            return Err(ValidationError::new(
                field,
                format!("character {bad:?} is not allowed; use only A-Z a-z 0-9 . _ ~ -"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArticleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')
}

/// A point in time between 0001-01-01 and 9999-12-31, to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch; negative before 1970.
    pub seconds: i64,
    /// Nanoseconds within the second, 0-999,999,999.
    pub nanos: u32,
}

impl Timestamp {
    /// 0001-01-01T00:00:00Z, the earliest valid protobuf Timestamp.
    pub const MIN_SECONDS: i64 = -62_135_596_800;
    /// 9999-12-31T23:59:59Z, the latest valid protobuf Timestamp.
    pub const MAX_SECONDS: i64 = 253_402_300_799;

    /// Checks a protobuf Timestamp against the valid range.
    ///
    /// # Errors
    /// A [`ValidationError`] on `field` when the year is outside 0001-9999 or
    /// nanos is outside 0-999,999,999.
    pub fn from_proto(
        field: &'static str,
        raw: &prost_types::Timestamp,
    ) -> Result<Self, ValidationError> {
        if !(Self::MIN_SECONDS..=Self::MAX_SECONDS).contains(&raw.seconds) {
            return Err(ValidationError::new(
                field,
                "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
            ));
        }
        let nanos = u32::try_from(raw.nanos)
            .ok()
            .filter(|n| *n <= 999_999_999)
            .ok_or_else(|| ValidationError::new(field, "nanos must be 0-999999999"))?;
        Ok(Self {
            seconds: raw.seconds,
            nanos,
        })
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            nanos: since_epoch.subsec_nanos(),
        }
    }

    /// RFC 3339, to the second or finer, as in messages.
    pub fn to_rfc3339(self) -> String {
        self.to_proto().to_string()
    }

    /// The protobuf form.
    pub fn to_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.seconds,
            // nanos is at most 999,999,999, which fits an i32.
            nanos: i32::try_from(self.nanos).unwrap_or(i32::MAX),
        }
    }
}

/// Everything about an article except its id and the fields the server sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleContent {
    /// Canonical address as sent, or empty.
    pub url: String,
    /// Headline.
    pub title: String,
    /// Full text.
    pub body: String,
    /// Publication time; the date index is keyed by it.
    pub published_at: Timestamp,
    /// Author names, in order.
    pub authors: Vec<String>,
    /// Publisher or site.
    pub source: String,
    /// Section of the publication.
    pub section: String,
    /// Free-form tags, in order.
    pub tags: Vec<String>,
    /// BCP-47 language tag, or empty.
    pub language: String,
    /// Standfirst or summary, or empty.
    pub description: String,
}

impl ArticleContent {
    /// SHA-256 of the canonical encoding of the content.
    ///
    /// Each field, in protobuf field-number order, is written as its field
    /// number (u32 big-endian) followed by its value: a string as its length
    /// (u64 big-endian) and UTF-8 bytes; a timestamp as seconds (i64
    /// big-endian) and nanos (u32 big-endian); a repeated string as one entry
    /// per element, in order. The encoding is unambiguous, so two different
    /// contents never share an input to the hash.
    pub fn sha256(&self) -> [u8; 32] {
        let mut hash = CanonicalHasher::default();
        hash.string(2, &self.url);
        hash.string(3, &self.title);
        hash.string(4, &self.body);
        hash.timestamp(5, self.published_at);
        for author in &self.authors {
            hash.string(6, author);
        }
        hash.string(7, &self.source);
        hash.string(8, &self.section);
        for tag in &self.tags {
            hash.string(9, tag);
        }
        hash.string(10, &self.language);
        hash.string(13, &self.description);
        hash.finish()
    }
}

#[derive(Default)]
struct CanonicalHasher(Sha256);

impl CanonicalHasher {
    fn string(&mut self, field: u32, value: &str) {
        self.0.update(field.to_be_bytes());
        self.0.update((value.len() as u64).to_be_bytes());
        self.0.update(value.as_bytes());
    }

    fn timestamp(&mut self, field: u32, value: Timestamp) {
        self.0.update(field.to_be_bytes());
        self.0.update(value.seconds.to_be_bytes());
        self.0.update(value.nanos.to_be_bytes());
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// A validated article, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    id: ArticleId,
    content: ArticleContent,
}

impl Article {
    /// Validates a protobuf article. `ingested_at` and `content_sha256` are
    /// ignored: the server sets them.
    ///
    /// # Errors
    /// The first rule broken, as a [`ValidationError`] naming the field.
    pub fn from_proto(raw: proto::Article) -> Result<Self, ValidationError> {
        check_url(&raw.url)?;
        check_required_text("title", &raw.title, MAX_TITLE_BYTES)?;
        check_required_text("body", &raw.body, MAX_BODY_BYTES)?;
        let published_at = raw
            .published_at
            .as_ref()
            .ok_or_else(|| ValidationError::new("published_at", "is required"))
            .and_then(|ts| Timestamp::from_proto("published_at", ts))?;
        check_list("authors", &raw.authors)?;
        check_max_len("source", &raw.source, MAX_LABEL_BYTES)?;
        check_max_len("section", &raw.section, MAX_LABEL_BYTES)?;
        check_list("tags", &raw.tags)?;
        check_language(&raw.language)?;
        check_max_len("description", &raw.description, MAX_DESCRIPTION_BYTES)?;

        let content = ArticleContent {
            url: raw.url,
            title: raw.title,
            body: raw.body,
            published_at,
            authors: raw.authors,
            source: raw.source,
            section: raw.section,
            tags: raw.tags,
            language: raw.language,
            description: raw.description,
        };
        let id = if raw.id.is_empty() {
            derive_id(&content)
        } else {
            ArticleId::parse("id", &raw.id)?
        };
        Ok(Self { id, content })
    }

    /// An article read back from storage, where it was stored valid (its
    /// hash checked on the way out): not validated again.
    pub(crate) fn from_stored(stored: &StoredArticle) -> Self {
        Self {
            id: stored.id.clone(),
            content: stored.content.clone(),
        }
    }

    /// The given or derived id.
    pub fn id(&self) -> &ArticleId {
        &self.id
    }

    /// The content.
    pub fn content(&self) -> &ArticleContent {
        &self.content
    }

    /// The id and the content, taken apart.
    pub fn into_parts(self) -> (ArticleId, ArticleContent) {
        (self.id, self.content)
    }
}

/// An article as stored: its content plus what the server recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArticle {
    /// The id it is stored under.
    pub id: ArticleId,
    /// What was ingested.
    pub content: ArticleContent,
    /// When this version was written.
    pub ingested_at: Timestamp,
    /// SHA-256 of the content, as computed when it was written.
    pub content_sha256: [u8; 32],
    /// 1 for the first stored version of the article, +1 for each update.
    pub revision: u64,
}

impl StoredArticle {
    /// The protobuf form; `with_body` false leaves the body empty (the BASIC
    /// view).
    pub fn into_proto(self, with_body: bool) -> proto::Article {
        let content = self.content;
        proto::Article {
            id: self.id.0,
            url: content.url,
            title: content.title,
            body: if with_body {
                content.body
            } else {
                String::new()
            },
            published_at: Some(content.published_at.to_proto()),
            authors: content.authors,
            source: content.source,
            section: content.section,
            tags: content.tags,
            language: content.language,
            description: content.description,
            ingested_at: Some(self.ingested_at.to_proto()),
            content_sha256: lower_hex(&self.content_sha256),
            revision: self.revision,
        }
    }
}

/// Lower-case hex of `bytes`. `hex::encode` goes a char at a time through
/// an iterator; a page of 1000 articles encodes 1000 hashes, and this
/// table-driven loop took its share of a BASIC walk's profile (2.8 % + 2 %)
/// down to noise.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The id of an article sent without one.
///
/// With a url: `u-` and the first 32 hex digits of the SHA-256 of the
/// normalised url (see [`normalise_url`]), so the same page crawled twice,
/// with other tracking parameters, is one record. Without a url: `c-` and the
/// first 32 hex digits of the SHA-256 of title, published_at, body and source
/// (in the canonical encoding of [`ArticleContent::sha256`]).
pub fn derive_id(content: &ArticleContent) -> ArticleId {
    let (prefix, digest): (&str, [u8; 32]) = match normalise_url(&content.url) {
        Some(url) => ("u-", Sha256::digest(url.as_bytes()).into()),
        None => {
            let mut hash = CanonicalHasher::default();
            hash.string(3, &content.title);
            hash.timestamp(5, content.published_at);
            hash.string(4, &content.body);
            hash.string(7, &content.source);
            ("c-", hash.finish())
        }
    };
    ArticleId(format!("{prefix}{}", &hex::encode(digest)[..32]))
}

/// The normalised form of an http(s) url, or `None` for an empty or
/// unparsable one.
///
/// Scheme and host are lower-cased, a default port (80, 443) is dropped, the
/// fragment is dropped, and so are tracking parameters: `utm_*` and the names
/// in `TRACKING_PARAMETERS`. The path and the remaining parameters, in
/// their order, are kept: they can name different articles.
pub fn normalise_url(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    // The url crate lower-cases scheme and host and drops default ports.
    let mut url = url::Url::parse(raw).ok()?;
    url.set_fragment(None);
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| !is_tracking_parameter(name))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Some(url.into())
}

fn is_tracking_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("utm_") || TRACKING_PARAMETERS.contains(&name.as_str())
}

fn check_url(raw: &str) -> Result<(), ValidationError> {
    if raw.is_empty() {
        return Ok(());
    }
    check_max_len("url", raw, MAX_URL_BYTES)?;
    let url = url::Url::parse(raw).map_err(|e| {
        ValidationError::new("url", format!("must be an absolute http(s) URL ({e})"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new(
            "url",
            format!("scheme must be http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new("url", "must have a host"));
    }
    Ok(())
}

fn check_max_len(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

fn check_required_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be blank"));
    }
    check_max_len(field, value, max)
}

fn check_list(field: &'static str, entries: &[String]) -> Result<(), ValidationError> {
    if entries.len() > MAX_LIST_ENTRIES {
        return Err(ValidationError::new(
            field,
            format!(
                "must have at most {MAX_LIST_ENTRIES} entries, got {}",
                entries.len()
            ),
        ));
    }
    for (i, entry) in entries.iter().enumerate() {
        if entry.trim().is_empty() {
            return Err(ValidationError::new(
                field,
                format!("entry {i} must not be blank"),
            ));
        }
        if entry.len() > MAX_LIST_ENTRY_BYTES {
            return Err(ValidationError::new(
                field,
                format!("entry {i} must be at most {MAX_LIST_ENTRY_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Accepts the shape of a BCP-47 tag: a 2-8 letter primary subtag followed by
/// `-`-separated subtags of 1-8 letters or digits. It does not consult the
/// subtag registry: archives hold tags the registry may not know.
fn check_language(raw: &str) -> Result<(), ValidationError> {
    if raw.is_empty() {
        return Ok(());
    }
    check_max_len("language", raw, MAX_LANGUAGE_BYTES)?;
    let mut subtags = raw.split('-');
    let primary_ok = subtags
        .next()
        .is_some_and(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    let rest_ok =
        subtags.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
    if primary_ok && rest_ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "language",
            format!("{raw:?} is not a BCP-47 language tag such as \"en\" or \"pt-BR\""),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> proto::Article {
        proto::Article {
            url: "https://example.com/a".into(),
            title: "Title".into(),
            body: "Body".into(),
            published_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn rejected_field(article: proto::Article) -> &'static str {
        Article::from_proto(article).unwrap_err().field
    }

    #[test]
    fn tracking_parameters_fragment_case_and_default_port_do_not_change_the_id() {
        let plain = normalise_url("https://example.com/news/1?page=2").unwrap();
        for variant in [
            "HTTPS://Example.COM:443/news/1?page=2",
            "https://example.com/news/1?utm_source=x&page=2&fbclid=y#comments",
            "https://example.com/news/1?page=2&gclid=1&UTM_Medium=m",
        ] {
            assert_eq!(normalise_url(variant).unwrap(), plain, "{variant}");
        }
        assert_eq!(
            normalise_url("http://example.com:80/a").unwrap(),
            "http://example.com/a"
        );
        assert_ne!(normalise_url("https://example.com/News/1").unwrap(), plain);
    }

    #[test]
    fn derived_ids_follow_the_url_or_else_the_content() {
        let mut a = valid();
        a.url = "https://example.com/a?utm_campaign=z".into();
        let mut b = valid();
        b.title = "Another title".into();
        let id_a = Article::from_proto(a).unwrap().id().clone();
        let id_b = Article::from_proto(b).unwrap().id().clone();
        assert_eq!(id_a, id_b, "same normalised url, same id");
        assert!(id_a.as_str().starts_with("u-") && id_a.as_str().len() == 34);

        let mut c = valid();
        c.url.clear();
        let id_c = Article::from_proto(c.clone()).unwrap().id().clone();
        assert!(id_c.as_str().starts_with("c-"));
        assert_eq!(Article::from_proto(c.clone()).unwrap().id(), &id_c);
        c.body = "Other body".into();
        assert_ne!(Article::from_proto(c).unwrap().id(), &id_c);
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut a = valid();
        a.title = " \n".into();
        assert_eq!(rejected_field(a), "title");
        let mut a = valid();
        a.body = "x".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(rejected_field(a), "body");
        let mut a = valid();
        a.published_at = None;
        assert_eq!(rejected_field(a), "published_at");
        let mut a = valid();
        a.published_at = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: 1_000_000_000,
        });
        assert_eq!(rejected_field(a), "published_at");
        let mut a = valid();
        a.published_at = Some(prost_types::Timestamp {
            seconds: Timestamp::MAX_SECONDS + 1,
            nanos: 0,
        });
        assert_eq!(rejected_field(a), "published_at");
        let mut a = valid();
        a.url = "ftp://example.com/x".into();
        assert_eq!(rejected_field(a), "url");
        let mut a = valid();
        a.url = "/relative/path".into();
        assert_eq!(rejected_field(a), "url");
        let mut a = valid();
        a.id = "has space".into();
        assert_eq!(rejected_field(a), "id");
        let mut a = valid();
        a.id = "x".repeat(129);
        assert_eq!(rejected_field(a), "id");
        let mut a = valid();
        a.authors = vec!["".into()];
        assert_eq!(rejected_field(a), "authors");
        let mut a = valid();
        a.tags = vec!["t".into(); MAX_LIST_ENTRIES + 1];
        assert_eq!(rejected_field(a), "tags");
        let mut a = valid();
        a.language = "english language".into();
        assert_eq!(rejected_field(a), "language");
        let mut a = valid();
        a.source = "s".repeat(MAX_LABEL_BYTES + 1);
        assert_eq!(rejected_field(a), "source");
    }

    #[test]
    fn limits_are_inclusive() {
        let mut a = valid();
        a.id = "A".repeat(MAX_ID_CHARS);
        a.body = "x".repeat(MAX_BODY_BYTES);
        a.language = "pt-BR".into();
        a.published_at = Some(prost_types::Timestamp {
            seconds: Timestamp::MIN_SECONDS,
            nanos: 999_999_999,
        });
        assert!(Article::from_proto(a).is_ok());
    }

    #[test]
    fn content_hash_separates_fields() {
        let base = Article::from_proto(valid()).unwrap().content().clone();
        let mut moved = base.clone();
        moved.title = "TitleB".into();
        moved.body = "ody".into();
        assert_ne!(base.sha256(), moved.sha256());
        let mut split = base.clone();
        split.authors = vec!["ab".into()];
        let mut joined = base.clone();
        joined.authors = vec!["a".into(), "b".into()];
        assert_ne!(split.sha256(), joined.sha256());
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,40}",
            Just(String::new()),
            Just(" \t\n".into()),
            Just("x".repeat(5000))
        ]
    }

    fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
        prop::option::of(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Any protobuf article is either rejected naming a field and a rule,
        /// or valid; a valid one read back as the server returns it (with
        /// `ingested_at` and `content_sha256` filled in) and sent again keeps
        /// its id and its content hash, so re-sending an article as read is
        /// UNCHANGED; never a panic.
        #[test]
        fn any_article_validates_or_is_rejected_cleanly(
            id in text(), url in text(), title in text(), body in text(), published_at in timestamp(),
            authors in prop::collection::vec(text(), 0..4), language in text(),
        ) {
            let raw = proto::Article { id, url, title, body, published_at, authors, language, ..Default::default() };
            match Article::from_proto(raw) {
                Ok(article) => {
                    let stored = StoredArticle {
                        id: article.id().clone(),
                        content: article.content().clone(),
                        ingested_at: Timestamp { seconds: 1, nanos: 2 },
                        content_sha256: article.content().sha256(),
                        revision: 1,
                    };
                    let again = Article::from_proto(stored.into_proto(true)).unwrap();
                    prop_assert_eq!(again.id(), article.id());
                    prop_assert_eq!(again.content().sha256(), article.content().sha256());
                }
                Err(e) => prop_assert!(
                    ["id", "url", "title", "body", "published_at", "authors", "language"].contains(&e.field)
                        && !e.rule.is_empty(),
                    "{e}"
                ),
            }
        }
    }
}
