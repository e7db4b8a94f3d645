//! The values of the indexes, all pointing into the record log
//! (`revisions` is a sled tree, the id and date indexes are in the runs,
//! [`super::runs`]).
//!
//! - `ids`: id → [`IdState`]: where the current version is, its revision,
//!   date and hash, so the writer decides CREATED / UPDATED / UNCHANGED and
//!   moves the date entry without reading a record; or, for a deleted
//!   article, its [`Tombstone`];
//! - `dates`: `published_at ‖ id` → [`DateEntry`]: the current version's
//!   place and every field but the body (plain: the run's blocks are
//!   compressed, so they are compressed with their neighbours), so a BASIC
//!   page is one range scan and a FULL page knows which records to read,
//!   and how large they are, before it reads them;
//! - `revisions`: `id ‖ 0 ‖ revision` → [`RevisionEntry`]: where each
//!   *older* revision is. The current one is in `ids`, so an article that
//!   was never updated (most) costs nothing here.

use prost::Message;

use super::{
    codec::{Codec, Compression, Kind},
    log::Pointer,
};
use crate::article::{ArticleContent, ArticleId, StoredArticle, Timestamp};

/// Why an index value could not be decoded.
pub type DecodeError = String;

#[derive(Clone, PartialEq, prost::Message)]
struct PointerV2 {
    #[prost(uint64, tag = "1")]
    segment: u64,
    #[prost(uint64, tag = "2")]
    offset: u64,
    #[prost(uint32, tag = "3")]
    len: u32,
}

impl From<Pointer> for PointerV2 {
    fn from(p: Pointer) -> Self {
        Self {
            segment: p.segment,
            offset: p.offset,
            len: p.len,
        }
    }
}

/// The stored form of a bare pointer (the `checkpoints` tree).
pub fn encode_pointer(pointer: Pointer) -> Vec<u8> {
    PointerV2::from(pointer).encode_to_vec()
}

/// The inverse of [`encode_pointer`].
///
/// # Errors
/// A description of the damage.
pub fn decode_pointer(bytes: &[u8]) -> Result<Pointer, DecodeError> {
    pointer(Some(PointerV2::decode(bytes).map_err(|e| e.to_string())?))
}

fn pointer(raw: Option<PointerV2>) -> Result<Pointer, DecodeError> {
    let raw = raw.ok_or("no record pointer")?;
    Ok(Pointer {
        segment: raw.segment,
        offset: raw.offset,
        len: raw.len,
    })
}

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
    #[prost(message, optional, tag = "6")]
    pointer: Option<PointerV2>,
    #[prost(bool, tag = "7")]
    deleted: bool,
    #[prost(int64, tag = "8")]
    deleted_seconds: i64,
    #[prost(uint32, tag = "9")]
    deleted_nanos: u32,
    #[prost(bool, tag = "10")]
    allow_reingest: bool,
}

/// What the id index holds for an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdState {
    /// A stored article.
    Live(IdEntry),
    /// A deleted one.
    Deleted(Tombstone),
}

/// What is kept of a deleted article: that it was deleted, when, and
/// whether it may come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// The sequence number of the DELETED change.
    pub sequence: u64,
    /// When the deletion was stored.
    pub deleted_at: Timestamp,
    /// Whether a later ingest may store the id again.
    pub allow_reingest: bool,
}

impl IdState {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            IdState::Live(entry) => entry.encode(),
            IdState::Deleted(tombstone) => IdEntryV2 {
                sequence: tombstone.sequence,
                deleted: true,
                deleted_seconds: tombstone.deleted_at.seconds,
                deleted_nanos: tombstone.deleted_at.nanos,
                allow_reingest: tombstone.allow_reingest,
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    /// Decodes a stored entry.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw = IdEntryV2::decode(bytes).map_err(|e| e.to_string())?;
        if raw.deleted {
            return Ok(IdState::Deleted(Tombstone {
                sequence: raw.sequence,
                deleted_at: timestamp(raw.deleted_seconds, raw.deleted_nanos)?,
                allow_reingest: raw.allow_reingest,
            }));
        }
        Ok(IdState::Live(IdEntry {
            sequence: raw.sequence,
            pointer: pointer(raw.pointer)?,
            revision: raw.revision,
            published_at: timestamp(raw.published_seconds, raw.published_nanos)?,
            content_sha256: sha(&raw.content_sha256)?,
        }))
    }

    /// The live entry, if the article is not deleted.
    pub fn live(self) -> Option<IdEntry> {
        match self {
            IdState::Live(entry) => Some(entry),
            IdState::Deleted(_) => None,
        }
    }
}

/// The id entry of a stored (not deleted) article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry {
    /// Sequence number of the current version.
    pub sequence: u64,
    /// Where it is in the log.
    pub pointer: Pointer,
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
            pointer: Some(self.pointer.into()),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Decodes a stored entry that must be a live article's.
    ///
    /// # Errors
    /// A description of the damage, or that the article was deleted.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        IdState::decode(bytes)?
            .live()
            .ok_or_else(|| "the article was deleted".into())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct RevisionEntryV2 {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(message, optional, tag = "2")]
    pointer: Option<PointerV2>,
    #[prost(bytes = "vec", tag = "3")]
    content_sha256: Vec<u8>,
}

/// A `revisions` entry: where an older revision is, and its content hash
/// (so restoring a full-history export a second time can answer UNCHANGED
/// without reading the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionEntry {
    /// Its sequence number.
    pub sequence: u64,
    /// Where it is in the log.
    pub pointer: Pointer,
    /// Its content hash.
    pub content_sha256: [u8; 32],
}

impl RevisionEntry {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        RevisionEntryV2 {
            sequence: self.sequence,
            pointer: Some(self.pointer.into()),
            content_sha256: self.content_sha256.to_vec(),
        }
        .encode_to_vec()
    }

    /// Decodes a stored entry.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw = RevisionEntryV2::decode(bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            sequence: raw.sequence,
            pointer: pointer(raw.pointer)?,
            content_sha256: sha(&raw.content_sha256)?,
        })
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct DateEntryV2 {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(message, optional, tag = "2")]
    pointer: Option<PointerV2>,
    #[prost(uint64, tag = "3")]
    revision: u64,
    #[prost(int64, tag = "4")]
    ingested_seconds: i64,
    #[prost(uint32, tag = "5")]
    ingested_nanos: u32,
    #[prost(bytes = "vec", tag = "6")]
    content_sha256: Vec<u8>,
    #[prost(uint64, tag = "7")]
    body_bytes: u64,
    #[prost(uint32, tag = "8")]
    basic_compression: u32,
    #[prost(uint32, tag = "9")]
    basic_dictionary: u32,
    #[prost(bytes = "vec", tag = "10")]
    basic: Vec<u8>,
}

/// The BASIC fields before compression.
#[derive(Clone, PartialEq, prost::Message)]
struct BasicFieldsV2 {
    #[prost(string, tag = "1")]
    url: String,
    #[prost(string, tag = "2")]
    title: String,
    #[prost(string, repeated, tag = "3")]
    authors: Vec<String>,
    #[prost(string, tag = "4")]
    source: String,
    #[prost(string, tag = "5")]
    section: String,
    #[prost(string, repeated, tag = "6")]
    tags: Vec<String>,
    #[prost(string, tag = "7")]
    language: String,
    #[prost(string, tag = "8")]
    description: String,
}

/// Every field but the body and published_at (which is in the key),
/// encoded, ready for a date entry.
///
/// Stored plain. They were once compressed one entry at a time with a
/// dictionary of their own (351 → about 160 bytes), but a date entry lives
/// in a run block that is compressed whole, about twenty entries together
/// (with zstd that alone made the runs as small; they are lz4 now, for
/// reads, 14 % larger: BENCHMARKS.md "Plain BASIC fields in the date
/// entries"); a frame per entry cost a fifth of a BASIC walk's server CPU.
/// Entries written compressed by an archive from before still decode
/// ([`DateEntry::decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicFields {
    bytes: Vec<u8>,
}

/// The BASIC fields of `content`, encoded, before compression: what a
/// dictionary for them is trained on.
pub fn plain_basic(content: &ArticleContent) -> Vec<u8> {
    // Encoded from the borrowed fields, in tag order, as `BasicFieldsV2`
    // would encode them, without copying them into a message first.
    use prost::encoding::string;
    let mut out = Vec::with_capacity(256 + content.description.len());
    let single = |tag: u32, value: &String, out: &mut Vec<u8>| {
        if !value.is_empty() {
            string::encode(tag, value, out);
        }
    };
    single(1, &content.url, &mut out);
    single(2, &content.title, &mut out);
    string::encode_repeated(3, &content.authors, &mut out);
    single(4, &content.source, &mut out);
    single(5, &content.section, &mut out);
    string::encode_repeated(6, &content.tags, &mut out);
    single(7, &content.language, &mut out);
    single(8, &content.description, &mut out);
    out
}

impl BasicFields {
    /// Encodes the fields of `content` a BASIC listing shows.
    pub fn of(content: &ArticleContent) -> Self {
        Self {
            bytes: plain_basic(content),
        }
    }

    /// Stored length.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}

/// What the writer knows of a version when it indexes it.
#[derive(Debug, Clone, Copy)]
pub struct VersionFacts {
    /// Its sequence number.
    pub sequence: u64,
    /// Where it is in the log.
    pub pointer: Pointer,
    /// Its revision.
    pub revision: u64,
    /// When it was written.
    pub ingested_at: Timestamp,
    /// Its content hash.
    pub content_sha256: [u8; 32],
    /// Bytes of its body.
    pub body_bytes: u64,
}

/// Encodes a date entry.
pub fn encode_date_entry(facts: &VersionFacts, basic: &BasicFields) -> Vec<u8> {
    let (basic_compression, basic_dictionary) = Compression::None.to_fields();
    DateEntryV2 {
        sequence: facts.sequence,
        pointer: Some(facts.pointer.into()),
        revision: facts.revision,
        ingested_seconds: facts.ingested_at.seconds,
        ingested_nanos: facts.ingested_at.nanos,
        content_sha256: facts.content_sha256.to_vec(),
        body_bytes: facts.body_bytes,
        basic_compression,
        basic_dictionary,
        basic: basic.bytes.clone(),
    }
    .encode_to_vec()
}

/// A decoded date entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateEntry {
    /// The version it stands for.
    pub sequence: u64,
    /// Where that version is in the log.
    pub pointer: Pointer,
    /// Bytes of that version's body.
    pub body_bytes: u64,
    /// The article without its body.
    pub article: StoredArticle,
}

impl DateEntry {
    /// Decodes the entry stored under `(published_at, id)`, decompressing
    /// its BASIC fields if an archive from before compressed them.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn decode(
        codec: &Codec,
        published_at: Timestamp,
        id: ArticleId,
        bytes: &[u8],
    ) -> Result<Self, DecodeError> {
        let raw = DateEntryV2::decode(bytes).map_err(|e| e.to_string())?;
        let compression = Compression::from_fields(raw.basic_compression, raw.basic_dictionary)
            .ok_or_else(|| format!("unknown compression {}", raw.basic_compression))?;
        let plain = codec.decompress(Kind::Basic, compression, &raw.basic)?;
        let basic = BasicFieldsV2::decode(plain.as_slice()).map_err(|e| e.to_string())?;
        Ok(Self {
            sequence: raw.sequence,
            pointer: pointer(raw.pointer)?,
            body_bytes: raw.body_bytes,
            article: StoredArticle {
                id,
                content: ArticleContent {
                    url: basic.url,
                    title: basic.title,
                    body: String::new(),
                    published_at,
                    authors: basic.authors,
                    source: basic.source,
                    section: basic.section,
                    tags: basic.tags,
                    language: basic.language,
                    description: basic.description,
                },
                ingested_at: timestamp(raw.ingested_seconds, raw.ingested_nanos)?,
                content_sha256: sha(&raw.content_sha256)?,
                revision: raw.revision,
            },
        })
    }

    /// Just the sequence number and pointer, without the BASIC fields.
    ///
    /// # Errors
    /// A description of the damage.
    pub fn locate(bytes: &[u8]) -> Result<(u64, Pointer), DecodeError> {
        let raw = DateEntryV2::decode(bytes).map_err(|e| e.to_string())?;
        Ok((raw.sequence, pointer(raw.pointer)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::codec;

    #[test]
    fn the_plain_basic_fields_are_the_basic_message() {
        let content = ArticleContent {
            url: "https://example.com/a".into(),
            title: "T".into(),
            body: "B".into(),
            published_at: Timestamp {
                seconds: 1,
                nanos: 0,
            },
            authors: vec!["A".into(), "B".into()],
            source: String::new(),
            section: "World".into(),
            tags: vec!["x".into()],
            language: "en".into(),
            description: "D".into(),
        };
        let expected = BasicFieldsV2 {
            url: content.url.clone(),
            title: content.title.clone(),
            authors: content.authors.clone(),
            source: content.source.clone(),
            section: content.section.clone(),
            tags: content.tags.clone(),
            language: content.language.clone(),
            description: content.description.clone(),
        }
        .encode_to_vec();
        assert_eq!(plain_basic(&content), expected);
    }

    #[test]
    fn entries_with_basic_fields_compressed_by_an_archive_from_before_still_decode() {
        let codec = Codec::default();
        let content = |i: u32| ArticleContent {
            url: format!("https://example{}.com/news/{i}", i % 7),
            title: format!("Council approves the budget for district {i}"),
            body: String::new(),
            published_at: Timestamp {
                seconds: -86_400 + i64::from(i),
                nanos: 0,
            },
            authors: vec![format!("Reporter {}", i % 13)],
            source: format!("example{}.com", i % 7),
            section: ["World", "Politics", "Sport"][i as usize % 3].into(),
            tags: vec!["budget".into(), format!("district-{i}")],
            language: "en".into(),
            description: format!("The council met on day {i} and approved the budget."),
        };
        let samples: Vec<_> = (0..500).map(|i| plain_basic(&content(i))).collect();
        codec.add_dictionary(
            Kind::Basic,
            3,
            &codec::train(Kind::Basic, &samples).unwrap(),
        );
        let article = content(9999);
        let (compression, basic) = codec.compress(Kind::Basic, &plain_basic(&article));
        assert_eq!(compression, Compression::Zstd { dictionary: 3 });
        let at = Pointer {
            segment: 2,
            offset: 40,
            len: 700,
        };
        let old_entry = |dictionary: u32| {
            DateEntryV2 {
                sequence: 11,
                pointer: Some(at.into()),
                revision: 1,
                ingested_seconds: 5,
                content_sha256: vec![1; 32],
                basic_compression: 1,
                basic_dictionary: dictionary,
                basic: basic.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let id = ArticleId::parse("id", "old").unwrap();
        let entry =
            DateEntry::decode(&codec, article.published_at, id.clone(), &old_entry(3)).unwrap();
        assert_eq!(entry.article.content, article);
        assert_eq!((entry.sequence, entry.pointer), (11, at));
        // One naming a dictionary the archive does not hold is damage, and
        // says which.
        let missing = DateEntry::decode(&codec, article.published_at, id, &old_entry(4));
        assert!(missing.unwrap_err().contains("dictionary 4 is missing"));
        // New entries are written plain.
        let new = encode_date_entry(
            &VersionFacts {
                sequence: 12,
                pointer: at,
                revision: 2,
                ingested_at: Timestamp {
                    seconds: 6,
                    nanos: 0,
                },
                content_sha256: [1; 32],
                body_bytes: 0,
            },
            &BasicFields::of(&article),
        );
        let raw = DateEntryV2::decode(new.as_slice()).unwrap();
        assert_eq!(
            (raw.basic_compression, raw.basic),
            (0, plain_basic(&article))
        );
    }

    #[test]
    fn entries_round_trip() {
        let codec = Codec::default();
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
            description: "D".repeat(300),
        };
        let at = Pointer {
            segment: 1,
            offset: 1 << 33,
            len: 900,
        };
        let facts = VersionFacts {
            sequence: 1 << 40,
            pointer: at,
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
        let entry = DateEntry::decode(&codec, content.published_at, id, &bytes).unwrap();
        assert_eq!((entry.sequence, entry.pointer), (1 << 40, at));
        assert_eq!(DateEntry::locate(&bytes).unwrap(), (1 << 40, at));
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
            pointer: at,
            revision: 2,
            published_at: Timestamp {
                seconds: 1,
                nanos: 0,
            },
            content_sha256: [9; 32],
        };
        assert_eq!(IdEntry::decode(&ids.encode()).unwrap(), ids);
        assert!(IdEntry::decode(&[0xFF, 0xFF]).is_err());
        let old = RevisionEntry {
            sequence: 3,
            pointer: at,
            content_sha256: [4; 32],
        };
        assert_eq!(RevisionEntry::decode(&old.encode()).unwrap(), old);
    }
}
