//! Opaque, tamper-evident keyset page tokens.
//!
//! A token carries the query it belongs to (order and range) and the position
//! of the last article returned, signed with HMAC-SHA256 under a key kept in
//! the archive. Resuming strictly after that position means ties, concurrent
//! ingest and restarts never make a page skip or repeat an article. Layout
//! before base64url (no padding):
//!
//! `version (1) ‖ order (1) ‖ bounds flags (1) ‖ start (14) ‖ end (14) ‖
//!  position time (14) ‖ position id (1-128) ‖ tag (16)`
//!
//! Timestamps use the order-preserving encoding of the date index.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    article::{ArticleId, Timestamp},
    error::Error,
    store::{keys, DateRange, Order, Position},
};

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const TS_LEN: usize = keys::TIMESTAMP_LEN;
const HEADER_LEN: usize = 3 + 2 * TS_LEN;
/// Longest token text accepted; anything longer is not one of ours.
const MAX_TOKEN_CHARS: usize = 512;

/// The query a page belongs to and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The listing's order.
    pub order: Order,
    /// The listing's range.
    pub range: DateRange,
    /// The last article returned; the next page starts strictly after it.
    pub after: Position,
}

impl PageToken {
    /// Encodes and signs the token.
    pub fn encode(&self, key: &[u8; 32]) -> String {
        let mut bytes = Vec::with_capacity(HEADER_LEN + TS_LEN + 128 + TAG_LEN);
        bytes.push(VERSION);
        bytes.push(match self.order {
            Order::OldestFirst => 1,
            Order::NewestFirst => 2,
        });
        bytes.push(u8::from(self.range.start.is_some()) | u8::from(self.range.end.is_some()) << 1);
        for bound in [self.range.start, self.range.end] {
            bytes.extend_from_slice(&keys::timestamp_prefix(bound.unwrap_or(Timestamp {
                seconds: 0,
                nanos: 0,
            })));
        }
        bytes.extend_from_slice(&keys::date_key(self.after.published_at, &self.after.id));
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
        const GARBAGE: Error = Error::InvalidPageToken("not a page token issued by this archive");
        if text.len() > MAX_TOKEN_CHARS {
            return Err(GARBAGE);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| GARBAGE)?;
        if bytes.len() < HEADER_LEN + TS_LEN + 1 + TAG_LEN {
            return Err(GARBAGE);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(body);
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(tag).map_err(|_| GARBAGE)?;
        if body[0] != VERSION {
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
        let (published_at, id): (Timestamp, ArticleId) =
            keys::parse_date_key(&body[HEADER_LEN..]).ok_or(GARBAGE)?;
        Ok(Self {
            order,
            range,
            after: Position { published_at, id },
        })
    }
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
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    fn token() -> PageToken {
        PageToken {
            order: Order::NewestFirst,
            range: DateRange {
                start: Some(Timestamp {
                    seconds: -3_755_289_600,
                    nanos: 0,
                }),
                end: None,
            },
            after: Position {
                published_at: Timestamp {
                    seconds: 12,
                    nanos: 34,
                },
                id: ArticleId::parse("id", "abc-1").unwrap(),
            },
        }
    }

    #[test]
    fn tokens_round_trip() {
        let t = token();
        assert_eq!(PageToken::decode(&t.encode(&KEY), &KEY).unwrap(), t);
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
