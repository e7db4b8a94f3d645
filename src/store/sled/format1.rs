//! Format 1 records, read by the upgrade to format 2 (and by tests that
//! make a format 1 directory to upgrade).
//!
//! A record was one format byte (1) followed by a protobuf message, stored
//! under the article's id in the `articles` tree; `by_date` held
//! `date_key → empty`.

use prost::Message;

use crate::article::{ArticleContent, ArticleId, StoredArticle, Timestamp};

/// The only record format so far.
const FORMAT_V1: u8 = 1;

#[derive(Clone, PartialEq, prost::Message)]
struct RecordV1 {
    #[prost(int64, tag = "1")]
    published_seconds: i64,
    #[prost(uint32, tag = "2")]
    published_nanos: u32,
    #[prost(bytes = "vec", tag = "3")]
    content_sha256: Vec<u8>,
    #[prost(int64, tag = "4")]
    ingested_seconds: i64,
    #[prost(uint32, tag = "5")]
    ingested_nanos: u32,
    #[prost(string, tag = "6")]
    url: String,
    #[prost(string, tag = "7")]
    title: String,
    #[prost(string, tag = "8")]
    body: String,
    #[prost(string, repeated, tag = "9")]
    authors: Vec<String>,
    #[prost(string, tag = "10")]
    source: String,
    #[prost(string, tag = "11")]
    section: String,
    #[prost(string, repeated, tag = "12")]
    tags: Vec<String>,
    #[prost(string, tag = "13")]
    language: String,
    #[prost(string, tag = "14")]
    description: String,
}

/// Why a record could not be decoded.
pub type DecodeError = String;

/// Encodes a record for the primary tree.
pub fn encode(
    content: &ArticleContent,
    content_sha256: [u8; 32],
    ingested_at: Timestamp,
) -> Vec<u8> {
    let record = RecordV1 {
        published_seconds: content.published_at.seconds,
        published_nanos: content.published_at.nanos,
        content_sha256: content_sha256.to_vec(),
        ingested_seconds: ingested_at.seconds,
        ingested_nanos: ingested_at.nanos,
        url: content.url.clone(),
        title: content.title.clone(),
        body: content.body.clone(),
        authors: content.authors.clone(),
        source: content.source.clone(),
        section: content.section.clone(),
        tags: content.tags.clone(),
        language: content.language.clone(),
        description: content.description.clone(),
    };
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(FORMAT_V1);
    record
        .encode(&mut out)
        .expect("a Vec grows to fit any message");
    out
}

fn payload(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => Ok(rest),
        Some((other, _)) => Err(format!("unknown record format {other}")),
        None => Err("empty record".into()),
    }
}

fn timestamp(seconds: i64, nanos: u32, what: &str) -> Result<Timestamp, DecodeError> {
    let ts = Timestamp { seconds, nanos };
    if (Timestamp::MIN_SECONDS..=Timestamp::MAX_SECONDS).contains(&seconds) && nanos < 1_000_000_000
    {
        Ok(ts)
    } else {
        Err(format!("{what} {seconds}.{nanos} is out of range"))
    }
}

fn sha(bytes: &[u8]) -> Result<[u8; 32], DecodeError> {
    bytes
        .try_into()
        .map_err(|_| format!("content_sha256 has {} bytes, not 32", bytes.len()))
}

/// Decodes a whole record stored under `id`.
///
/// # Errors
/// A description of the damage when the bytes are not a record.
pub fn decode(id: &ArticleId, bytes: &[u8]) -> Result<StoredArticle, DecodeError> {
    let raw = RecordV1::decode(payload(bytes)?).map_err(|e| e.to_string())?;
    Ok(StoredArticle {
        id: id.clone(),
        content: ArticleContent {
            url: raw.url,
            title: raw.title,
            body: raw.body,
            published_at: timestamp(raw.published_seconds, raw.published_nanos, "published_at")?,
            authors: raw.authors,
            source: raw.source,
            section: raw.section,
            tags: raw.tags,
            language: raw.language,
            description: raw.description,
        },
        ingested_at: timestamp(raw.ingested_seconds, raw.ingested_nanos, "ingested_at")?,
        content_sha256: sha(&raw.content_sha256)?,
        // Format 1 kept no history: every article was at its first revision.
        revision: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_records_round_trip() {
        let content = ArticleContent {
            url: "https://example.com/a".into(),
            title: "Agn├Ęs says “hello”".into(),
            body: "line one\n\nline two".into(),
            published_at: Timestamp {
                seconds: -3_755_289_600,
                nanos: 5,
            },
            authors: vec!["A".into(), "B".into()],
            source: "example.com".into(),
            section: "World".into(),
            tags: vec!["t".into()],
            language: "en".into(),
            description: "A summary".into(),
        };
        let sha = content.sha256();
        let ingested = Timestamp {
            seconds: 1,
            nanos: 2,
        };
        let bytes = encode(&content, sha, ingested);
        let id = ArticleId::parse("id", "x").unwrap();
        let stored = decode(&id, &bytes).unwrap();
        assert_eq!(stored.content, content);
        assert_eq!(stored.ingested_at, ingested);
        assert_eq!(stored.content_sha256, sha);
        assert_eq!(stored.revision, 1);
        assert!(decode(&id, &bytes[..bytes.len() - 3]).is_err());
        assert!(decode(&id, &[9, 1, 2]).is_err());
    }
}
