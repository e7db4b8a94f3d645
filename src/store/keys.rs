//! Order-preserving key encoding for the date index.
//!
//! A date-index key is `seconds ‖ nanos ‖ id`:
//! - seconds: the i64 Unix seconds with the sign bit flipped, as 8 big-endian
//!   bytes, so that 1851 sorts before 1969 and 1969 before 1970;
//! - nanos: u32, 4 big-endian bytes;
//! - id: the id's ASCII bytes, last, so that equal timestamps sort by id.
//!
//! Byte order of keys is therefore exactly (published_at, id) order, which is
//! what sled's ordered iteration and range bounds work on.

use crate::article::{ArticleId, Timestamp};

/// Length of the fixed-width timestamp prefix of a date-index key.
pub const TIMESTAMP_LEN: usize = 12;

const SIGN_BIT: u64 = 1 << 63;

/// The fixed-width, order-preserving encoding of a timestamp.
pub fn timestamp_prefix(ts: Timestamp) -> [u8; TIMESTAMP_LEN] {
    let mut out = [0u8; TIMESTAMP_LEN];
    // Reinterpreting the bits and flipping the sign bit maps i64 order onto
    // u64 order: i64::MIN -> 0, -1 -> 2^63 - 1, 0 -> 2^63.
    let biased = (ts.seconds as u64) ^ SIGN_BIT;
    out[..8].copy_from_slice(&biased.to_be_bytes());
    out[8..].copy_from_slice(&ts.nanos.to_be_bytes());
    out
}

/// The date-index key of an article.
pub fn date_key(published_at: Timestamp, id: &ArticleId) -> Vec<u8> {
    let mut key = Vec::with_capacity(TIMESTAMP_LEN + id.as_str().len());
    key.extend_from_slice(&timestamp_prefix(published_at));
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// Splits a date-index key back into its timestamp and id, or `None` when the
/// bytes cannot be one (too short, invalid id, out-of-range time).
pub fn parse_date_key(key: &[u8]) -> Option<(Timestamp, ArticleId)> {
    if key.len() <= TIMESTAMP_LEN {
        return None;
    }
    let (ts, id) = key.split_at(TIMESTAMP_LEN);
    let biased = u64::from_be_bytes(ts[..8].try_into().ok()?);
    let nanos = u32::from_be_bytes(ts[8..].try_into().ok()?);
    let published_at = Timestamp::from_proto(
        "key",
        &prost_types::Timestamp {
            seconds: (biased ^ SIGN_BIT) as i64,
            nanos: i32::try_from(nanos).ok()?,
        },
    )
    .ok()?;
    let id = ArticleId::parse("key", std::str::from_utf8(id).ok()?).ok()?;
    Some((published_at, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (
            Timestamp::MIN_SECONDS..=Timestamp::MAX_SECONDS,
            0u32..1_000_000_000,
        )
            .prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
    }

    fn id() -> impl Strategy<Value = ArticleId> {
        "[A-Za-z0-9._~-]{1,20}".prop_map(|s| ArticleId::parse("id", &s).unwrap())
    }

    proptest! {
        #[test]
        fn key_order_is_published_at_then_id_order(a in (timestamp(), id()), b in (timestamp(), id())) {
            let ka = date_key(a.0, &a.1);
            let kb = date_key(b.0, &b.1);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }

        #[test]
        fn keys_parse_back(ts in timestamp(), id in id()) {
            prop_assert_eq!(parse_date_key(&date_key(ts, &id)), Some((ts, id)));
        }
    }

    #[test]
    fn pre_1970_sorts_before_the_epoch() {
        let id = ArticleId::parse("id", "a").unwrap();
        let ts = |seconds| Timestamp { seconds, nanos: 0 };
        let keys: Vec<_> = [-3_755_289_600, -1, 0, 1]
            .into_iter()
            .map(|s| date_key(ts(s), &id))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
