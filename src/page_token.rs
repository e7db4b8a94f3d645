//! Opaque, tamper-evident keyset page tokens.
//!
//! A token carries a fingerprint of the query it belongs to and the cursor
//! of the last item returned, signed with HMAC-SHA256 under a key kept in
//! the archive. The next page starts strictly after the cursor, so ties,
//! concurrent writes and restarts never make a walk skip or repeat an item,
//! and a token presented with another query (another range, order, filter,
//! id or view) is refused. Layout before base64url (no padding):
//!
//! `version 2 (1) ‖ kind (1) ‖ fingerprint (16) ‖ cursor ‖ tag (16)`
//!
//! where the cursor is a date-index key (a place in (published_at, id)
//! order), a revision number (8 bytes, big-endian), or a key of the url
//! index. Version 1 tokens
//! (ListArticles, before filters existed) are still accepted: they carried
//! the order and range in the clear, which give the same fingerprint.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{
    article::Timestamp,
    error::Error,
    store::{keys, DateRange, Order, Position},
};

const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const TAG_LEN: usize = 16;
const FINGERPRINT_LEN: usize = 16;
const TS_LEN: usize = keys::TIMESTAMP_LEN;
/// Longest token text accepted; anything longer is not one of ours. A url
/// listing's cursor holds a url (up to 4096 bytes), base64 a third more.
const MAX_TOKEN_CHARS: usize = 6 * 1024;

/// What a token pages through; each kind has its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ListArticles (and what lists by date): the cursor is a [`Position`].
    Dates = 1,
    /// ListArticleRevisions: the cursor is a revision.
    Revisions = 2,
    /// ListArticlesByUrl: the cursor is a key of the url index.
    Urls = 3,
}

/// Where the next page starts (strictly after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// A place in (published_at, id) order.
    Date(Position),
    /// A revision of an article, newest first.
    Revision(u64),
    /// A place in the url index (host-reversed url, scheme, date, id).
    UrlKey(Vec<u8>),
}

/// The query a page belongs to, as a fingerprint, and where the next page
/// starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// What it pages through.
    pub kind: Kind,
    /// SHA-256 (first 16 bytes) of the query's parameters; see
    /// [`fingerprint`].
    pub fingerprint: [u8; FINGERPRINT_LEN],
    /// The last item returned.
    pub cursor: Cursor,
}

/// The fingerprint of a query: each part is length-prefixed, so two
/// different queries never feed the hash the same bytes.
pub fn fingerprint(kind: Kind, parts: &[&[u8]]) -> [u8; FINGERPRINT_LEN] {
    let mut hash = Sha256::new();
    hash.update([kind as u8]);
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let full = hash.finalize();
    let mut out = [0u8; FINGERPRINT_LEN];
    out.copy_from_slice(&full[..FINGERPRINT_LEN]);
    out
}

/// The parts of a date listing's fingerprint: its order and range, then
/// whatever else binds it (a filter's canonical bytes; none for a plain
/// listing).
pub fn date_query_parts(order: Order, range: DateRange) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 + 2 * TS_LEN);
    bytes.push(match order {
        Order::OldestFirst => 1,
        Order::NewestFirst => 2,
    });
    bytes.push(u8::from(range.start.is_some()) | u8::from(range.end.is_some()) << 1);
    for bound in [range.start, range.end] {
        bytes.extend_from_slice(&keys::timestamp_prefix(bound.unwrap_or(Timestamp {
            seconds: 0,
            nanos: 0,
        })));
    }
    bytes
}

const GARBAGE: Error = Error::InvalidPageToken("not a page token issued by this archive");

impl PageToken {
    /// Encodes and signs the token.
    pub fn encode(&self, key: &[u8; 32]) -> String {
        let mut bytes = Vec::with_capacity(2 + FINGERPRINT_LEN + TS_LEN + 128 + TAG_LEN);
        bytes.push(VERSION_2);
        bytes.push(self.kind as u8);
        bytes.extend_from_slice(&self.fingerprint);
        match &self.cursor {
            Cursor::Date(position) => {
                bytes.extend_from_slice(&keys::date_key(position.published_at, &position.id));
            }
            Cursor::Revision(revision) => bytes.extend_from_slice(&revision.to_be_bytes()),
            Cursor::UrlKey(key) => bytes.extend_from_slice(key),
        }
        let tag = sign(key, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a token and checks its signature.
    ///
    /// # Errors
    /// [`Error::InvalidPageToken`] for anything that is not a token this
    /// archive issued.
    pub fn decode(text: &str, key: &[u8; 32]) -> Result<Self, Error> {
        if text.len() > MAX_TOKEN_CHARS {
            return Err(GARBAGE);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| GARBAGE)?;
        if bytes.len() < 2 + TAG_LEN {
            return Err(GARBAGE);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(body);
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(tag).map_err(|_| GARBAGE)?;
        match body[0] {
            VERSION_1 => decode_version_1(body),
            VERSION_2 => decode_version_2(body),
            _ => Err(GARBAGE),
        }
    }

    /// The date cursor, for a token that must be of a date listing with
    /// this fingerprint.
    ///
    /// # Errors
    /// [`Error::InvalidPageToken`] when it belongs to another query.
    pub fn date_cursor(&self, fingerprint: &[u8; FINGERPRINT_LEN]) -> Result<Position, Error> {
        match &self.cursor {
            Cursor::Date(position)
                if self.kind == Kind::Dates && &self.fingerprint == fingerprint =>
            {
                Ok(position.clone())
            }
            _ => Err(Error::InvalidPageToken(
                "it was issued for a different query (range, order or filter)",
            )),
        }
    }

    /// The revision cursor, for a token that must be of a revision listing
    /// with this fingerprint.
    ///
    /// # Errors
    /// [`Error::InvalidPageToken`] when it belongs to another query.
    pub fn revision_cursor(&self, fingerprint: &[u8; FINGERPRINT_LEN]) -> Result<u64, Error> {
        match self.cursor {
            Cursor::Revision(revision)
                if self.kind == Kind::Revisions && &self.fingerprint == fingerprint =>
            {
                Ok(revision)
            }
            _ => Err(Error::InvalidPageToken(
                "it was issued for a different query (id or view)",
            )),
        }
    }
}

impl PageToken {
    /// The url-index cursor, for a token that must be of a url listing with
    /// this fingerprint.
    ///
    /// # Errors
    /// [`Error::InvalidPageToken`] when it belongs to another query.
    pub fn url_cursor(&self, fingerprint: &[u8; FINGERPRINT_LEN]) -> Result<Vec<u8>, Error> {
        match &self.cursor {
            Cursor::UrlKey(key) if self.kind == Kind::Urls && &self.fingerprint == fingerprint => {
                Ok(key.clone())
            }
            _ => Err(Error::InvalidPageToken(
                "it was issued for a different query (url, match or view)",
            )),
        }
    }
}

/// `1 ‖ order ‖ bounds flags ‖ start ‖ end ‖ position key`.
fn decode_version_1(body: &[u8]) -> Result<PageToken, Error> {
    const HEADER: usize = 3 + 2 * TS_LEN;
    if body.len() < HEADER + TS_LEN + 1 {
        return Err(GARBAGE);
    }
    let order = match body[1] {
        1 => Order::OldestFirst,
        2 => Order::NewestFirst,
        _ => return Err(GARBAGE),
    };
    let flags = body[2];
    let bound = |present: bool, at: usize| -> Result<Option<Timestamp>, Error> {
        if !present {
            return Ok(None);
        }
        // A timestamp prefix followed by any id parses as a key; borrow the
        // key parser for the timestamp half.
        let mut probe = body[at..at + TS_LEN].to_vec();
        probe.push(b'x');
        keys::parse_date_key(&probe)
            .map(|(ts, _)| Some(ts))
            .ok_or(GARBAGE)
    };
    let range = DateRange {
        start: bound(flags & 1 != 0, 3)?,
        end: bound(flags & 2 != 0, 3 + TS_LEN)?,
    };
    let (published_at, id) = keys::parse_date_key(&body[HEADER..]).ok_or(GARBAGE)?;
    Ok(PageToken {
        kind: Kind::Dates,
        fingerprint: fingerprint(Kind::Dates, &[&date_query_parts(order, range), &[]]),
        cursor: Cursor::Date(Position { published_at, id }),
    })
}

fn decode_version_2(body: &[u8]) -> Result<PageToken, Error> {
    if body.len() < 2 + FINGERPRINT_LEN + 1 {
        return Err(GARBAGE);
    }
    let mut fingerprint = [0u8; FINGERPRINT_LEN];
    fingerprint.copy_from_slice(&body[2..2 + FINGERPRINT_LEN]);
    let cursor = &body[2 + FINGERPRINT_LEN..];
    let (kind, cursor) = match body[1] {
        1 => {
            let (published_at, id) = keys::parse_date_key(cursor).ok_or(GARBAGE)?;
            (Kind::Dates, Cursor::Date(Position { published_at, id }))
        }
        2 => {
            let revision = u64::from_be_bytes(cursor.try_into().map_err(|_| GARBAGE)?);
            (Kind::Revisions, Cursor::Revision(revision))
        }
        3 => {
            keys::parse_url_index_key(cursor)
                .filter(|(_, date)| keys::parse_date_key(date).is_some())
                .ok_or(GARBAGE)?;
            (Kind::Urls, Cursor::UrlKey(cursor.to_vec()))
        }
        _ => return Err(GARBAGE),
    };
    Ok(PageToken {
        kind,
        fingerprint,
        cursor,
    })
}

fn sign(key: &[u8; 32], bytes: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::article::ArticleId;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    fn range() -> DateRange {
        DateRange {
            start: Some(Timestamp {
                seconds: -3_755_289_600,
                nanos: 0,
            }),
            end: None,
        }
    }

    fn token() -> PageToken {
        PageToken {
            kind: Kind::Dates,
            fingerprint: fingerprint(
                Kind::Dates,
                &[&date_query_parts(Order::NewestFirst, range()), &[]],
            ),
            cursor: Cursor::Date(Position {
                published_at: Timestamp {
                    seconds: 12,
                    nanos: 34,
                },
                id: ArticleId::parse("id", "abc-1").unwrap(),
            }),
        }
    }

    #[test]
    fn tokens_round_trip() {
        let t = token();
        assert_eq!(PageToken::decode(&t.encode(&KEY), &KEY).unwrap(), t);
        let r = PageToken {
            kind: Kind::Revisions,
            fingerprint: fingerprint(Kind::Revisions, &[b"id", &[1]]),
            cursor: Cursor::Revision(41),
        };
        let decoded = PageToken::decode(&r.encode(&KEY), &KEY).unwrap();
        assert_eq!(decoded.revision_cursor(&r.fingerprint).unwrap(), 41);
        assert!(decoded.date_cursor(&r.fingerprint).is_err(), "another kind");
    }

    #[test]
    fn a_token_is_only_valid_for_its_query() {
        let t = token();
        let other = fingerprint(
            Kind::Dates,
            &[&date_query_parts(Order::OldestFirst, range()), &[]],
        );
        assert!(t.date_cursor(&t.fingerprint).is_ok());
        assert!(t.date_cursor(&other).is_err());
        let filtered = fingerprint(
            Kind::Dates,
            &[&date_query_parts(Order::NewestFirst, range()), b"sources=x"],
        );
        assert!(t.date_cursor(&filtered).is_err());
    }

    /// A token of the previous release (version 1) still pages on.
    #[test]
    fn version_1_tokens_are_still_accepted() {
        let position = keys::date_key(
            Timestamp {
                seconds: 12,
                nanos: 34,
            },
            &ArticleId::parse("id", "abc-1").unwrap(),
        );
        let mut bytes = vec![1u8, 2, 1];
        bytes.extend_from_slice(&keys::timestamp_prefix(range().start.unwrap()));
        bytes.extend_from_slice(&keys::timestamp_prefix(Timestamp {
            seconds: 0,
            nanos: 0,
        }));
        bytes.extend_from_slice(&position);
        let tag = sign(&KEY, &bytes);
        bytes.extend_from_slice(&tag);
        let decoded = PageToken::decode(&URL_SAFE_NO_PAD.encode(bytes), &KEY).unwrap();
        assert_eq!(decoded, token());
    }

    #[test]
    fn any_flipped_bit_or_other_key_is_rejected() {
        let text = token().encode(&KEY);
        let bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(
                PageToken::decode(&URL_SAFE_NO_PAD.encode(bad), &KEY).is_err(),
                "byte {i}"
            );
        }
        assert!(PageToken::decode(&text, &[8; 32]).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_decodes_or_panics(text in "\\PC{0,600}") {
            prop_assert!(PageToken::decode(&text, &KEY).is_err());
        }
    }
}
