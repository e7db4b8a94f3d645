//! JSON Lines for bulk loading and export: the protobuf JSON mapping of
//! `archive.v1.Article`, and the JSON that news-please writes.
//!
//! Each input line is one JSON object, and its shape is detected per line: an
//! object with any of the news-please keys `maintext`, `date_publish` or
//! `source_domain` is read as news-please (`from_news_please` is the one
//! place that maps it); anything else as the protobuf JSON mapping (camelCase
//! names, or the original snake_case names, as protobuf parsers accept;
//! timestamps as RFC 3339 strings). Unknown keys are ignored.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::proto;

/// Why a line could not be turned into an article.
pub type LineError = String;

/// The protobuf JSON mapping of `archive.v1.Article`. Empty fields are left
/// out on output, as protobuf JSON printers do.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArticleJson {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    id: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    url: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    title: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    body: String,
    #[serde(
        default,
        alias = "published_at",
        skip_serializing_if = "Option::is_none"
    )]
    published_at: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    authors: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    source: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    section: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    tags: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    language: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    description: String,
    #[serde(
        default,
        alias = "ingested_at",
        skip_serializing_if = "Option::is_none"
    )]
    ingested_at: Option<String>,
    #[serde(
        default,
        alias = "content_sha256",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    content_sha256: String,
    // Output only; a full-history export carries it, and `ingest
    // --revisions` restores it. A string, as the protobuf JSON mapping
    // writes 64-bit integers; a number is read too.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        serialize_with = "u64_as_string",
        deserialize_with = "u64_from_string_or_number"
    )]
    revision: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn u64_as_string<S: serde::Serializer>(n: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&n.to_string())
}

fn u64_from_string_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(0),
        Some(Raw::Number(n)) => Ok(n),
        Some(Raw::Text(text)) => text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a revision number"))),
    }
}

/// The fields of a news-please article that the archive keeps.
#[derive(Debug, Deserialize)]
struct NewsPleaseJson {
    title: Option<String>,
    maintext: Option<String>,
    description: Option<String>,
    date_publish: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    authors: Vec<String>,
    url: Option<String>,
    source_domain: Option<String>,
    language: Option<String>,
}

/// JSON `null` reads as the default, as in the protobuf JSON mapping.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn timestamp(field: &str, text: &str) -> Result<prost_types::Timestamp, LineError> {
    prost_types::Timestamp::from_str(text)
        .map_err(|_| format!("{field}: {text:?} is not an RFC 3339 timestamp"))
}

/// The forms `date_publish` is read in, named in the error for any other.
const DATE_PUBLISH_FORMS: &str = "YYYY-MM-DD HH:MM:SS (news-please's form; \
    .ffffff and a +HH:MM offset may follow, no offset means UTC) \
    or RFC 3339 (2020-05-17T14:30:00Z)";

/// Reads news-please's `date_publish`: `YYYY-MM-DD HH:MM:SS`, which is how
/// Python prints a datetime (news-please's `str(date_publish)`), so also
/// with `.ffffff` when it has microseconds and `+HH:MM` when it has a zone;
/// or the same with `T` and `Z`, RFC 3339. Nothing else: prost's parser
/// alone would also take a bare date or `+HHMM`, which no documented form
/// has.
fn date_publish(text: &str) -> Result<prost_types::Timestamp, LineError> {
    is_date_time(text)
        .then(|| prost_types::Timestamp::from_str(text).ok())
        .flatten()
        .ok_or_else(|| {
            format!("date_publish: {text:?} is not a time of the form {DATE_PUBLISH_FORMS}")
        })
}

/// Whether `text` has the shape `YYYY-MM-DD HH:MM:SS` (`T` for the space
/// allowed), an optional `.` fraction and an optional `Z` or `±HH:MM`. The
/// shape only: the values are checked when the text is parsed.
fn is_date_time(text: &str) -> bool {
    let Some((date_time, rest)) = text.as_bytes().split_at_checked(19) else {
        return false;
    };
    let date_time_ok = date_time.iter().enumerate().all(|(i, &b)| match i {
        4 | 7 => b == b'-',
        10 => matches!(b, b' ' | b'T' | b't'),
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    let zone = match rest.strip_prefix(b".") {
        Some(fraction) => {
            let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            &fraction[digits..]
        }
        None => rest,
    };
    let zone_ok = match zone {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    date_time_ok && zone_ok
}

/// Reads one line of either shape.
///
/// # Errors
/// A message saying why the line is not an article: invalid JSON, not an
/// object, a field of the wrong type, an unreadable timestamp.
pub fn parse_line(line: &str) -> Result<proto::Article, LineError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let is_news_please = ["maintext", "date_publish", "source_domain"]
        .iter()
        .any(|key| object.contains_key(*key));
    if is_news_please {
        let raw: NewsPleaseJson =
            serde_json::from_value(value).map_err(|e| format!("news-please article: {e}"))?;
        from_news_please(raw)
    } else {
        let raw: ArticleJson =
            serde_json::from_value(value).map_err(|e| format!("archive.v1.Article JSON: {e}"))?;
        from_article_json(raw)
    }
}

fn from_article_json(raw: ArticleJson) -> Result<proto::Article, LineError> {
    Ok(proto::Article {
        id: raw.id,
        url: raw.url,
        title: raw.title,
        body: raw.body,
        published_at: raw
            .published_at
            .map(|t| timestamp("publishedAt", &t))
            .transpose()?,
        authors: raw.authors,
        source: raw.source,
        section: raw.section,
        tags: raw.tags,
        language: raw.language,
        description: raw.description,
        // Set by the server; read so an export parses, ignored on ingest.
        ingested_at: raw
            .ingested_at
            .map(|t| timestamp("ingestedAt", &t))
            .transpose()?,
        content_sha256: raw.content_sha256,
        revision: raw.revision,
    })
}

/// Maps a news-please article onto an Article:
///
/// | news-please | Article |
/// |---|---|
/// | `title` | `title` |
/// | `maintext` | `body` |
/// | `description` | `description` |
/// | `date_publish` (`YYYY-MM-DD HH:MM:SS`, see [`date_publish`]) | `published_at`, read as UTC unless an offset follows |
/// | `authors` | `authors` |
/// | `url` | `url` (the id is derived from it) |
/// | `source_domain` | `source` |
/// | `language` | `language` |
///
/// Other keys (`title_page`, `title_rss`, `image_url`, `date_download`,
/// `date_modify`, `filename`, `localpath`) are not kept. news-please
/// usually writes no zone, and most crawls run in UTC, so UTC is the reading
/// that keeps an archive consistent; a missing `date_publish` is an error
/// rather than a guess.
fn from_news_please(raw: NewsPleaseJson) -> Result<proto::Article, LineError> {
    let date = raw
        .date_publish
        .ok_or("news-please article: date_publish is missing")?;
    Ok(proto::Article {
        url: raw.url.unwrap_or_default(),
        title: raw.title.unwrap_or_default(),
        body: raw.maintext.unwrap_or_default(),
        description: raw.description.unwrap_or_default(),
        published_at: Some(date_publish(&date)?),
        authors: raw.authors,
        source: raw.source_domain.unwrap_or_default(),
        language: raw.language.unwrap_or_default(),
        ..Default::default()
    })
}

/// One line (without the newline) of the protobuf JSON mapping of `article`.
pub fn to_line(article: &proto::Article) -> String {
    let json = ArticleJson {
        id: article.id.clone(),
        url: article.url.clone(),
        title: article.title.clone(),
        body: article.body.clone(),
        published_at: article.published_at.map(|t| t.to_string()),
        authors: article.authors.clone(),
        source: article.source.clone(),
        section: article.section.clone(),
        tags: article.tags.clone(),
        language: article.language.clone(),
        description: article.description.clone(),
        ingested_at: article.ingested_at.map(|t| t.to_string()),
        content_sha256: article.content_sha256.clone(),
        revision: article.revision,
    };
    serde_json::to_string(&json).expect("strings and lists always serialise")
}

/// One line (without the newline) of the protobuf JSON mapping of a change:
/// `{"sequence": "12", "kind": "CHANGE_KIND_UPDATED", "id": …, "article":
/// {…}, "changedAt": …}` (`reason` for a deletion). 64-bit integers are
/// strings, as the mapping writes them.
/// The protobuf JSON mapping of a CountArticlesResponse, on one line
/// (uint64 counts as strings, as the mapping says).
pub fn count_to_line(response: &proto::CountArticlesResponse) -> String {
    let buckets: Vec<serde_json::Value> = response
        .buckets
        .iter()
        .map(|bucket| {
            serde_json::json!({
                "startTime": bucket.start_time.map(|t| t.to_string()).unwrap_or_default(),
                "count": bucket.count.to_string(),
            })
        })
        .collect();
    serde_json::json!({"buckets": buckets, "total": response.total.to_string()}).to_string()
}

pub fn change_to_line(change: &proto::WatchChangesResponse) -> String {
    let mut object = serde_json::Map::new();
    object.insert("sequence".into(), change.sequence.to_string().into());
    let kind = proto::ChangeKind::try_from(change.kind)
        .unwrap_or(proto::ChangeKind::Unspecified)
        .as_str_name();
    object.insert("kind".into(), kind.into());
    object.insert("id".into(), change.id.clone().into());
    if let Some(article) = &change.article {
        let line = to_line(article);
        let value: serde_json::Value =
            serde_json::from_str(&line).expect("to_line writes valid JSON");
        object.insert("article".into(), value);
    }
    if let Some(at) = change.changed_at {
        object.insert("changedAt".into(), at.to_string().into());
    }
    if !change.reason.is_empty() {
        object.insert("reason".into(), change.reason.clone().into());
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_json_round_trips_every_field() {
        let article = proto::Article {
            id: "a-1".into(),
            url: "https://example.com/a".into(),
            title: "“Quoted” title".into(),
            body: "Agn├Ęs\nline two\t\u{1}".into(),
            published_at: Some(prost_types::Timestamp {
                seconds: -3_755_289_600,
                nanos: 120_000_000,
            }),
            authors: vec!["A".into(), "B".into()],
            source: "example.com".into(),
            section: "World".into(),
            tags: vec!["t".into()],
            language: "en".into(),
            description: "Summary".into(),
            ingested_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            content_sha256: "ab".repeat(32),
            revision: 3,
        };
        let line = to_line(&article);
        assert!(
            line.contains(r#""revision":"3""#),
            "64-bit integers as strings: {line}"
        );
        assert!(
            line.contains(r#""publishedAt":"1851-01-01T00:00:00.120Z""#),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert_eq!(parse_line(&line).unwrap(), article);
    }

    #[test]
    fn snake_case_names_and_nulls_are_accepted() {
        let article = parse_line(
            r#"{"title": "T", "body": "B", "published_at": "2020-01-02T03:04:05+01:00", "tags": null, "section": null}"#,
        )
        .unwrap();
        assert_eq!(article.published_at.unwrap().seconds, 1_577_930_645);
        assert!(article.tags.is_empty());
    }

    #[test]
    fn news_please_lines_map_onto_articles_in_utc() {
        let line = r#"{"authors": ["Jane Roe"], "date_download": "2021-01-01 00:00:00", "date_modify": null,
            "date_publish": "2020-05-17 14:30:00", "description": "Lede", "filename": "x.json",
            "image_url": null, "language": "en", "localpath": null, "maintext": "Full text",
            "source_domain": "example.org", "title": "Headline", "title_page": null, "title_rss": null,
            "url": "https://example.org/story"}"#;
        let article = parse_line(line).unwrap();
        assert_eq!(article.title, "Headline");
        assert_eq!(article.body, "Full text");
        assert_eq!(article.description, "Lede");
        assert_eq!(article.source, "example.org");
        assert_eq!(article.authors, ["Jane Roe"]);
        assert_eq!(article.url, "https://example.org/story");
        assert_eq!(
            article.published_at.unwrap().seconds,
            1_589_725_800,
            "read as UTC"
        );
        let missing_date = r#"{"maintext": "x", "title": "t", "date_publish": null}"#;
        assert!(parse_line(missing_date)
            .unwrap_err()
            .contains("date_publish is missing"));
    }

    #[test]
    fn date_publish_takes_the_documented_forms_and_names_them_otherwise() {
        // news-please's own form and what Python adds to it, and RFC 3339,
        // are read; anything else is refused with a message naming the
        // forms that would have been read.
        let seconds = |date: &str| {
            let line = serde_json::json!({"maintext": "x", "date_publish": date}).to_string();
            parse_line(&line).map(|a| a.published_at.unwrap().seconds)
        };
        assert_eq!(seconds("2020-05-17 14:30:00"), Ok(1_589_725_800));
        assert_eq!(seconds("2020-05-17 14:30:00.250000"), Ok(1_589_725_800));
        assert_eq!(seconds("2020-05-17 16:30:00+02:00"), Ok(1_589_725_800));
        assert_eq!(seconds("2020-05-17T14:30:00Z"), Ok(1_589_725_800));
        assert_eq!(seconds("2020-05-17T10:30:00-04:00"), Ok(1_589_725_800));
        for refused in [
            "2020-05-17",
            "17/05/2020 14:30",
            "2020-05-17 14:30",
            "2020-05-17 14:30:00+0200",
            "2020-05-17 14:30:00.",
            "2020-13-17 14:30:00",
            "2020-05-17 14:30:00 UTC",
            "yesterday",
        ] {
            let reason = seconds(refused).unwrap_err();
            assert!(
                reason.starts_with(&format!("date_publish: {refused:?} is not")),
                "{reason}"
            );
            assert!(reason.contains("YYYY-MM-DD HH:MM:SS"), "{reason}");
            assert!(reason.contains("RFC 3339"), "{reason}");
            assert!(!reason.contains("timestamp"), "{reason}");
        }
    }

    #[test]
    fn unreadable_lines_say_why() {
        assert!(parse_line("{not json")
            .unwrap_err()
            .starts_with("invalid JSON"));
        assert_eq!(parse_line("[1, 2]").unwrap_err(), "not a JSON object");
        assert!(parse_line(r#"{"title": 5}"#)
            .unwrap_err()
            .contains("archive.v1.Article JSON"));
        assert!(parse_line(r#"{"title": "t", "publishedAt": "yesterday"}"#)
            .unwrap_err()
            .contains("publishedAt"));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Any text gives an article or an error, never a panic.
        #[test]
        fn any_line_parses_or_fails_cleanly(line in "\\PC{0,300}") {
            let _ = parse_line(&line);
        }

        /// JSON objects built from the known keys with values of any JSON
        /// type, in both shapes: an article or an error naming the problem.
        #[test]
        fn known_keys_with_any_values_parse_or_fail_cleanly(
            keys in prop::collection::vec(prop::sample::select(vec![
                "id", "url", "title", "body", "publishedAt", "published_at", "authors", "tags",
                "maintext", "date_publish", "source_domain", "description", "language", "ingestedAt",
            ]), 0..8),
            values in prop::collection::vec(prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                "\\PC{0,40}".prop_map(serde_json::Value::from),
                Just(serde_json::json!(["a", 1, null])),
                Just(serde_json::json!({"nested": {"deep": []}})),
                Just(serde_json::Value::from("2020-01-01 00:00:00")),
            ], 8),
        ) {
            let object: serde_json::Map<String, serde_json::Value> =
                keys.into_iter().zip(values).map(|(k, v)| (k.to_string(), v)).collect();
            match parse_line(&serde_json::Value::Object(object).to_string()) {
                // What parses survives the export mapping unchanged.
                Ok(article) => prop_assert_eq!(parse_line(&to_line(&article)).unwrap(), article),
                // Every reason says which shape or field was at fault.
                Err(reason) => prop_assert!(
                    ["news-please article", "archive.v1.Article JSON", "publishedAt", "ingestedAt", "date_publish"]
                        .iter()
                        .any(|prefix| reason.starts_with(prefix)),
                    "{}", reason
                ),
            }
        }
    }
}
