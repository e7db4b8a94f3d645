//! The values of the index trees.
//!
//! - `ids`: id → [`IdEntry`]: where the current version is, its date and
//!   hash, so the writer decides CREATED / UPDATED / UNCHANGED and moves the
//!   date entry without reading a record;
//! - `dates`: `published_at ‖ id` → [`DateEntry`]: the current version's
//!   sequence number and every field but the body, so a BASIC page is one
//!   range scan and a FULL page knows which records to read and how large
//!   they are before it reads them;
//! - `revisions`: `id ‖ 0 ‖ revision` → the sequence number of that
//!   revision (big-endian u64).
//!
//! The date entry's BASIC fields are encoded once, off the writer, as
//! [`BasicFields`]; the writer puts its own fields (sequence, revision,
//! ingested_at) in front. Both are protobuf with disjoint field numbers, so
//! the concatenation is one message.

use prost::Message;

use crate::article::{ArticleContent, ArticleId, StoredArticle, Timestamp};

/// Why an index value could not be decoded.
pub type DecodeError = String;

#[derive(Clone, PartialEq, prost::Message)]
struct IdEntryV2 {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(int64, tag = "3")]
    published_seconds: i64,
    #[prost(uint32, tag = "4")]
    published_nanos: u32,
    #[prost(bytes = "vec", tag = "5")]
    content_sha256: Vec<u8>,
}

/// The `ids` entry of an article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry {
    /// Sequence number of the current version.
    pub sequence: u64,
    /// Its revision.
    pub revision: u64,
    /// Its publication time (where its date entry is).
    pub published_at: Timestamp,
    /// Its content hash.
    pub content_sha256: [u8; 32],
}

impl IdEntry {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        IdEntryV2 {
            sequence: self.sequence,
            revision: self.revision,
            published_seconds: self.published_at.seconds,
            published_nanos: self.published_at.nanos,
            content_sha256: self.content_sha256.to_vec(),
        }
        .encode_to_vec()
    }

    /// Decodes a stored entry.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw = IdEntryV2::decode(bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            sequence: raw.sequence,
            revision: raw.revision,
            published_at: timestamp(raw.published_seconds, raw.published_nanos)?,
            content_sha256: sha(&raw.content_sha256)?,
        })
    }
}

/// Fields 1-7 are the writer's, 10 and up the article's.
#[derive(Clone, PartialEq, prost::Message)]
struct DateEntryV2 {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(int64, tag = "3")]
    ingested_seconds: i64,
    #[prost(uint32, tag = "4")]
    ingested_nanos: u32,
    #[prost(bytes = "vec", tag = "5")]
    content_sha256: Vec<u8>,
    #[prost(uint64, tag = "6")]
    body_bytes: u64,
    #[prost(string, tag = "10")]
    url: String,
    #[prost(string, tag = "11")]
    title: String,
    #[prost(string, repeated, tag = "12")]
    authors: Vec<String>,
    #[prost(string, tag = "13")]
    source: String,
    #[prost(string, tag = "14")]
    section: String,
    #[prost(string, repeated, tag = "15")]
    tags: Vec<String>,
    #[prost(string, tag = "16")]
    language: String,
    #[prost(string, tag = "17")]
    description: String,
}

/// The article's part of a date entry, encoded off the writer.
#[derive(Clone, PartialEq, prost::Message)]
struct BasicFieldsV2 {
    #[prost(string, tag = "10")]
    url: String,
    #[prost(string, tag = "11")]
    title: String,
    #[prost(string, repeated, tag = "12")]
    authors: Vec<String>,
    #[prost(string, tag = "13")]
    source: String,
    #[prost(string, tag = "14")]
    section: String,
    #[prost(string, repeated, tag = "15")]
    tags: Vec<String>,
    #[prost(string, tag = "16")]
    language: String,
    #[prost(string, tag = "17")]
    description: String,
}

/// Every field but the body and published_at (which is in the key), encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicFields(Vec<u8>);

impl BasicFields {
    /// Encodes the fields of `content` a BASIC listing shows.
    pub fn of(content: &ArticleContent) -> Self {
        Self(
            BasicFieldsV2 {
                url: content.url.clone(),
                title: content.title.clone(),
                authors: content.authors.clone(),
                source: content.source.clone(),
                section: content.section.clone(),
                tags: content.tags.clone(),
                language: content.language.clone(),
                description: content.description.clone(),
            }
            .encode_to_vec(),
        )
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }
}

/// What the writer knows of a version when it indexes it.
#[derive(Debug, Clone, Copy)]
pub struct VersionFacts {
    /// Its sequence number.
    pub sequence: u64,
    /// Its revision.
    pub revision: u64,
    /// When it was written.
    pub ingested_at: Timestamp,
    /// Its content hash.
    pub content_sha256: [u8; 32],
    /// Bytes of its body.
    pub body_bytes: u64,
}

/// Encodes a date entry: the writer's fields, then the article's.
pub fn encode_date_entry(facts: &VersionFacts, basic: &BasicFields) -> Vec<u8> {
    let head = DateEntryV2 {
        sequence: facts.sequence,
        revision: facts.revision,
        ingested_seconds: facts.ingested_at.seconds,
        ingested_nanos: facts.ingested_at.nanos,
        content_sha256: facts.content_sha256.to_vec(),
        body_bytes: facts.body_bytes,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(head.encoded_len() + basic.0.len());
    head.encode(&mut out).expect("a Vec grows to fit");
    out.extend_from_slice(&basic.0);
    out
}

/// A decoded date entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateEntry {
    /// The version it stands for.
    pub sequence: u64,
    /// Bytes of that version's body.
    pub body_bytes: u64,
    /// The article without its body.
    pub article: StoredArticle,
}

impl DateEntry {
    /// Decodes the entry stored under `(published_at, id)`.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn decode(
        published_at: Timestamp,
        id: ArticleId,
        bytes: &[u8],
    ) -> Result<Self, DecodeError> {
        let raw = DateEntryV2::decode(bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            sequence: raw.sequence,
            body_bytes: raw.body_bytes,
            article: StoredArticle {
                id,
                content: ArticleContent {
                    url: raw.url,
                    title: raw.title,
                    body: String::new(),
                    published_at,
                    authors: raw.authors,
                    source: raw.source,
                    section: raw.section,
                    tags: raw.tags,
                    language: raw.language,
                    description: raw.description,
                },
                ingested_at: timestamp(raw.ingested_seconds, raw.ingested_nanos)?,
                content_sha256: sha(&raw.content_sha256)?,
                revision: raw.revision,
            },
        })
    }

    /// Just the sequence number, without decoding the rest.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn sequence_of(bytes: &[u8]) -> Result<u64, DecodeError> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct SequenceOnly {
            #[prost(uint64, tag = "1")]
            sequence: u64,
        }
        SequenceOnly::decode(bytes)
            .map(|raw| raw.sequence)
            .map_err(|e| e.to_string())
    }
}

fn timestamp(seconds: i64, nanos: u32) -> Result<Timestamp, DecodeError> {
    if (Timestamp::MIN_SECONDS..=Timestamp::MAX_SECONDS).contains(&seconds) && nanos < 1_000_000_000
    {
        Ok(Timestamp { seconds, nanos })
    } else {
        Err(format!("time {seconds}.{nanos} is out of range"))
    }
}

fn sha(bytes: &[u8]) -> Result<[u8; 32], DecodeError> {
    bytes
        .try_into()
        .map_err(|_| format!("content_sha256 has {} bytes, not 32", bytes.len()))
}

/// The `revisions` value: a sequence number.
pub fn encode_sequence(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// The inverse of [`encode_sequence`].
///
/// # Errors
/// When the value is not 8 bytes.
pub fn decode_sequence(bytes: &[u8]) -> Result<u64, DecodeError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| format!("a sequence number of {} bytes", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_entries_join_the_writers_and_the_articles_fields() {
        let content = ArticleContent {
            url: "https://example.com/a".into(),
            title: "T".into(),
            body: "the body is not in the index".into(),
            published_at: Timestamp {
                seconds: -5,
                nanos: 7,
            },
            authors: vec!["A".into()],
            source: "example.com".into(),
            section: "World".into(),
            tags: vec!["x".into(), "y".into()],
            language: "en".into(),
            description: "D".into(),
        };
        let facts = VersionFacts {
            sequence: 1 << 40,
            revision: 4,
            ingested_at: Timestamp {
                seconds: 9,
                nanos: 1,
            },
            content_sha256: [3; 32],
            body_bytes: 28,
        };
        let bytes = encode_date_entry(&facts, &BasicFields::of(&content));
        let id = ArticleId::parse("id", "a").unwrap();
        let entry = DateEntry::decode(content.published_at, id.clone(), &bytes).unwrap();
        assert_eq!(entry.sequence, 1 << 40);
        assert_eq!(DateEntry::sequence_of(&bytes).unwrap(), 1 << 40);
        assert_eq!(entry.body_bytes, 28);
        assert_eq!(entry.article.revision, 4);
        assert_eq!(
            entry.article.content,
            ArticleContent {
                body: String::new(),
                ..content
            }
        );
        let ids = IdEntry {
            sequence: 12,
            revision: 2,
            published_at: Timestamp {
                seconds: 1,
                nanos: 0,
            },
            content_sha256: [9; 32],
        };
        assert_eq!(IdEntry::decode(&ids.encode()).unwrap(), ids);
        assert!(IdEntry::decode(&[0xFF, 0xFF]).is_err());
    }
}
