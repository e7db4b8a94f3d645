//! The record log's records: one stored version of an article (format 2).
//!
//! `[2] ‖ varint(header length) ‖ header ‖ payload`
//!
//! - the header (a protobuf message defined here, not in the public API) is
//!   never compressed: sequence number, id, revision, ingested_at, content
//!   hash, publication time, and how the payload is compressed. Check,
//!   repair and the change feed read it without touching the text;
//! - the payload is the content fields as a protobuf message, compressed
//!   ([`super::codec`]).
//!
//! Publication time is in the header rather than the payload so the date
//! index can be rebuilt from headers alone.

use prost::Message;

use super::codec::{Codec, Compression, Kind};
use crate::article::{ArticleContent, ArticleId, StoredArticle, Timestamp};

/// The record format this module writes.
const FORMAT_2: u8 = 2;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A stored version of an article.
    Version = 1,
    /// The article's deletion: no payload; the header carries the reason.
    Deletion = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderV2 {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(uint32, tag = "2")]
    kind: u32,
    #[prost(uint64, tag = "3")]
    revision: u64,
    #[prost(int64, tag = "4")]
    ingested_seconds: i64,
    #[prost(uint32, tag = "5")]
    ingested_nanos: u32,
    #[prost(bytes = "vec", tag = "6")]
    content_sha256: Vec<u8>,
    #[prost(int64, tag = "7")]
    published_seconds: i64,
    #[prost(uint32, tag = "8")]
    published_nanos: u32,
    #[prost(uint32, tag = "9")]
    compression: u32,
    #[prost(uint32, tag = "10")]
    dictionary: u32,
    #[prost(uint64, tag = "11")]
    sequence: u64,
    #[prost(string, tag = "12")]
    reason: String,
    #[prost(bool, tag = "13")]
    allow_reingest: bool,
}

/// The content fields, before compression. (published_at is in the header.)
#[derive(Clone, PartialEq, prost::Message)]
struct ContentV2 {
    #[prost(string, tag = "1")]
    url: String,
    #[prost(string, tag = "2")]
    title: String,
    #[prost(string, tag = "3")]
    body: String,
    #[prost(string, repeated, tag = "4")]
    authors: Vec<String>,
    #[prost(string, tag = "5")]
    source: String,
    #[prost(string, tag = "6")]
    section: String,
    #[prost(string, repeated, tag = "7")]
    tags: Vec<String>,
    #[prost(string, tag = "8")]
    language: String,
    #[prost(string, tag = "9")]
    description: String,
}

/// Why a record could not be decoded.
pub type DecodeError = String;

/// The uncompressed part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Its place in the log; no two records share one.
    pub sequence: u64,
    /// The article.
    pub id: ArticleId,
    /// What the record is.
    pub kind: RecordKind,
    /// 1 for the first stored version, +1 for each update.
    pub revision: u64,
    /// When this version was written.
    pub ingested_at: Timestamp,
    /// SHA-256 of the content.
    pub content_sha256: [u8; 32],
    /// The version's publication time.
    pub published_at: Timestamp,
    /// How the payload is stored.
    pub compression: Compression,
}

/// What a deletion record says besides its header's sequence, id and time
/// (`ingested_at`: when the deletion was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionNote {
    /// Why the article was removed.
    pub reason: String,
    /// Whether a later ingest may store the id again.
    pub allow_reingest: bool,
}

/// The content of an article, encoded and compressed, ready to be put into
/// a record by the writer once it knows the revision and time.
#[derive(Debug, Clone)]
pub struct Payload {
    /// How `bytes` is compressed.
    pub compression: Compression,
    /// The compressed content.
    pub bytes: Vec<u8>,
}

/// Encodes and compresses the content fields (everything but published_at,
/// which goes into the header).
pub fn payload(codec: &Codec, content: &ArticleContent) -> Payload {
    let (compression, bytes) = codec.compress(Kind::Content, &plain_content(content));
    Payload { compression, bytes }
}

/// The content fields encoded, before compression: what a payload holds and
/// what a dictionary is trained on.
pub fn plain_content(content: &ArticleContent) -> Vec<u8> {
    // Encoded from the borrowed fields, as `ContentV2` would encode them,
    // so the text is copied once, into the output, not first into a
    // message.
    use prost::encoding::string;
    let fields = [
        (1, &content.url),
        (2, &content.title),
        (3, &content.body),
        (5, &content.source),
        (6, &content.section),
        (8, &content.language),
        (9, &content.description),
    ];
    let len = fields
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(tag, v)| string::encoded_len(*tag, v))
        .sum::<usize>()
        + string::encoded_len_repeated(4, &content.authors)
        + string::encoded_len_repeated(7, &content.tags);
    let mut out = Vec::with_capacity(len);
    // Field order as prost writes it: by tag.
    for (tag, value) in &fields[..3] {
        if !value.is_empty() {
            string::encode(*tag, value, &mut out);
        }
    }
    string::encode_repeated(4, &content.authors, &mut out);
    for (tag, value) in &fields[3..5] {
        if !value.is_empty() {
            string::encode(*tag, value, &mut out);
        }
    }
    string::encode_repeated(7, &content.tags, &mut out);
    for (tag, value) in &fields[5..] {
        if !value.is_empty() {
            string::encode(*tag, value, &mut out);
        }
    }
    out
}

/// The uncompressed payload of a content, as [`payload`] compresses it; the
/// samples a dictionary is trained on.
pub fn plain_payload(codec: &Codec, stored: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let (header, payload) = split(stored)?;
    codec.decompress(Kind::Content, header.compression, payload)
}

/// Encodes a deletion record: a header and no payload. `header.kind` must
/// be [`RecordKind::Deletion`]; its hash and publication time are unused.
pub fn encode_deletion(header: &RecordHeader, note: &DeletionNote) -> Vec<u8> {
    encode(
        header,
        note,
        &Payload {
            compression: Compression::None,
            bytes: Vec::new(),
        },
    )
}

/// Encodes a version record.
pub fn encode_version(header: &RecordHeader, payload: &Payload) -> Vec<u8> {
    encode(
        header,
        &DeletionNote {
            reason: String::new(),
            allow_reingest: false,
        },
        payload,
    )
}

fn encode(header: &RecordHeader, note: &DeletionNote, payload: &Payload) -> Vec<u8> {
    let (compression, dictionary) = payload.compression.to_fields();
    let raw = HeaderV2 {
        sequence: header.sequence,
        id: header.id.as_str().to_owned(),
        kind: header.kind as u32,
        revision: header.revision,
        ingested_seconds: header.ingested_at.seconds,
        ingested_nanos: header.ingested_at.nanos,
        content_sha256: header.content_sha256.to_vec(),
        published_seconds: header.published_at.seconds,
        published_nanos: header.published_at.nanos,
        compression,
        dictionary,
        reason: note.reason.clone(),
        allow_reingest: note.allow_reingest,
    };
    let mut out = Vec::with_capacity(1 + 10 + raw.encoded_len() + payload.bytes.len());
    out.push(FORMAT_2);
    raw.encode_length_delimited(&mut out)
        .expect("a Vec grows to fit any message");
    out.extend_from_slice(&payload.bytes);
    out
}

fn split(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), DecodeError> {
    split_with_note(bytes).map(|(header, _, payload)| (header, payload))
}

fn split_with_note(bytes: &[u8]) -> Result<(RecordHeader, DeletionNote, &[u8]), DecodeError> {
    let rest = match bytes.split_first() {
        Some((&FORMAT_2, rest)) => rest,
        Some((other, _)) => return Err(format!("unknown record format {other}")),
        None => return Err("empty record".into()),
    };
    let mut cursor = rest;
    let raw = HeaderV2::decode_length_delimited(&mut cursor).map_err(|e| e.to_string())?;
    let header = RecordHeader {
        sequence: raw.sequence,
        id: ArticleId::parse("id", &raw.id).map_err(|e| format!("record id: {}", e.rule))?,
        kind: match raw.kind {
            1 => RecordKind::Version,
            2 => RecordKind::Deletion,
            other => return Err(format!("unknown record kind {other}")),
        },
        revision: raw.revision,
        ingested_at: timestamp(raw.ingested_seconds, raw.ingested_nanos, "ingested_at")?,
        content_sha256: raw.content_sha256.as_slice().try_into().map_err(|_| {
            format!(
                "content_sha256 has {} bytes, not 32",
                raw.content_sha256.len()
            )
        })?,
        published_at: timestamp(raw.published_seconds, raw.published_nanos, "published_at")?,
        compression: Compression::from_fields(raw.compression, raw.dictionary)
            .ok_or_else(|| format!("unknown compression {}", raw.compression))?,
    };
    let note = DeletionNote {
        reason: raw.reason,
        allow_reingest: raw.allow_reingest,
    };
    Ok((header, note, cursor))
}

/// Decodes a deletion record's header and note.
///
/// # Errors
/// A description of the damage, or that the record is not a deletion.
pub fn decode_deletion(bytes: &[u8]) -> Result<(RecordHeader, DeletionNote), DecodeError> {
    let (header, note, _) = split_with_note(bytes)?;
    if header.kind != RecordKind::Deletion {
        return Err("not a deletion record".into());
    }
    Ok((header, note))
}

fn timestamp(seconds: i64, nanos: u32, what: &str) -> Result<Timestamp, DecodeError> {
    if (Timestamp::MIN_SECONDS..=Timestamp::MAX_SECONDS).contains(&seconds) && nanos < 1_000_000_000
    {
        Ok(Timestamp { seconds, nanos })
    } else {
        Err(format!("{what} {seconds}.{nanos} is out of range"))
    }
}

/// Decodes only the header.
///
/// # Errors
/// A description of the damage.
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, DecodeError> {
    split(bytes).map(|(header, _)| header)
}

/// Decodes a whole version and checks that its content matches the hash
/// stored with it: what `check` and repair use. (Reads rely on the record
/// log's frame checksum, which is checked before a record is decoded.)
///
/// # Errors
/// A description of the damage.
pub fn decode_verified(codec: &Codec, bytes: &[u8]) -> Result<StoredArticle, DecodeError> {
    let stored = decode_version(codec, bytes)?;
    if stored.content.sha256() != stored.content_sha256 {
        return Err("content does not match content_sha256".into());
    }
    Ok(stored)
}

/// Decodes a whole version, decompressing its payload.
///
/// # Errors
/// A description of the damage.
pub fn decode_version(codec: &Codec, bytes: &[u8]) -> Result<StoredArticle, DecodeError> {
    let (header, payload) = split(bytes)?;
    if header.kind != RecordKind::Version {
        return Err("not a version record".into());
    }
    let plain = codec.decompress(Kind::Content, header.compression, payload)?;
    let raw = ContentV2::decode(plain.as_slice()).map_err(|e| e.to_string())?;
    let content = ArticleContent {
        url: raw.url,
        title: raw.title,
        body: raw.body,
        published_at: header.published_at,
        authors: raw.authors,
        source: raw.source,
        section: raw.section,
        tags: raw.tags,
        language: raw.language,
        description: raw.description,
    };
    Ok(StoredArticle {
        id: header.id,
        content,
        ingested_at: header.ingested_at,
        content_sha256: header.content_sha256,
        revision: header.revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> ArticleContent {
        ArticleContent {
            url: "https://example.com/a".into(),
            title: "S├╕ren says “hello”".into(),
            body: "line one\n\nline two 𝕏 ".repeat(50),
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
        }
    }

    #[test]
    fn the_plain_content_is_the_content_message() {
        let content = content();
        let expected = ContentV2 {
            url: content.url.clone(),
            title: content.title.clone(),
            body: content.body.clone(),
            authors: content.authors.clone(),
            source: content.source.clone(),
            section: content.section.clone(),
            tags: content.tags.clone(),
            language: content.language.clone(),
            description: content.description.clone(),
        }
        .encode_to_vec();
        assert_eq!(plain_content(&content), expected);
        let sparse = ArticleContent {
            url: String::new(),
            authors: Vec::new(),
            description: String::new(),
            ..content
        };
        assert_eq!(
            ContentV2::decode(plain_content(&sparse).as_slice())
                .unwrap()
                .body,
            sparse.body
        );
    }

    #[test]
    fn versions_round_trip_and_headers_agree() {
        let codec = Codec::default();
        let content = content();
        let header = RecordHeader {
            sequence: 9,
            id: ArticleId::parse("id", "x-1").unwrap(),
            kind: RecordKind::Version,
            revision: 3,
            ingested_at: Timestamp {
                seconds: 1,
                nanos: 2,
            },
            content_sha256: content.sha256(),
            published_at: content.published_at,
            compression: Compression::None,
        };
        let payload = payload(&codec, &content);
        assert!(matches!(payload.compression, Compression::Zstd { .. }));
        let bytes = encode_version(&header, &payload);
        let stored = decode_version(&codec, &bytes).unwrap();
        assert_eq!(stored.content, content);
        assert_eq!(stored.revision, 3);
        assert_eq!(stored.id.as_str(), "x-1");
        let read_header = decode_header(&bytes).unwrap();
        assert_eq!(read_header.compression, payload.compression);
        assert_eq!(
            RecordHeader {
                compression: Compression::None,
                ..read_header
            },
            header
        );
        assert!(decode_version(&codec, &bytes[..bytes.len() - 3]).is_err());
        assert!(decode_header(&[9, 1, 2]).is_err());
        assert!(decode_header(&[]).is_err());
    }

    #[test]
    fn a_payload_that_does_not_match_its_hash_is_an_error() {
        let codec = Codec::default();
        let content = content();
        let mut other = content.clone();
        other.title.push('!');
        let header = RecordHeader {
            sequence: 1,
            id: ArticleId::parse("id", "x").unwrap(),
            kind: RecordKind::Version,
            revision: 1,
            ingested_at: Timestamp::now(),
            content_sha256: content.sha256(),
            published_at: content.published_at,
            compression: Compression::None,
        };
        let bytes = encode_version(&header, &payload(&codec, &other));
        assert!(decode_verified(&codec, &bytes)
            .unwrap_err()
            .contains("does not match"));
    }
}
