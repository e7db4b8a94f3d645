//! Order-preserving key encodings: the date index, sequence numbers,
//! revisions, the label and url indexes, and counters.
//!
//! A date-index key is `seconds ‖ nanos ‖ id`:
//! - seconds: the i64 Unix seconds with the sign bit flipped (so 1851 sorts
//!   before 1969 and 1969 before 1970), written big-endian in 10 digits of
//!   7 bits each, one digit per byte;
//! - nanos: u32, 4 big-endian bytes;
//! - id: the id's ASCII bytes, last, so that equal timestamps sort by id.
//!
//! Byte order of keys is therefore exactly (published_at, id) order, which is
//! what sled's ordered iteration and range bounds work on.
//!
//! Why 7-bit digits rather than plain 8 big-endian bytes: sled 0.34's reverse
//! iteration loops forever and panics ("fucked up tree traversal") when it
//! steps back over a node boundary into keys that carry four 0xFF bytes right
//! after the boundary's last byte (its `possible_predecessor` guesses
//! `boundary - 1 ‖ FF FF FF FF`). Plain sign-flipped seconds for 1833-1969
//! start `7F FF FF FF FF`, so newest-first listings across 1970 hit it. With
//! 7-bit digits no key ever holds two 0xFF bytes in a row (nanos never
//! exceeds 0x3B9AC9FF and ids are ASCII), and the order is unchanged.

//!
//! A sequence key (the record log) is the u64 in the same 7-bit digits (10
//! bytes), and a revision key is `id ‖ 0x00 ‖ revision` in them too: no key
//! of any tree ever holds a 0xFF byte, so the reverse-iteration bug cannot
//! be reached whatever is iterated backwards.

use crate::article::{ArticleId, Timestamp};

/// Bytes of a u64 in 7-bit digits.
pub const U64_LEN: usize = 10;

/// A u64 as 10 big-endian 7-bit digits: byte order is numeric order, and no
/// byte is above 0x7F.
pub fn u64_key(value: u64) -> [u8; U64_LEN] {
    let mut out = [0u8; U64_LEN];
    for (i, digit) in out.iter_mut().enumerate() {
        let shift = 7 * (U64_LEN - 1 - i);
        *digit = ((value >> shift) & 0x7F) as u8;
    }
    out
}

/// The inverse of [`u64_key`]; `None` for bytes that are not one.
pub fn parse_u64_key(key: &[u8]) -> Option<u64> {
    if key.len() != U64_LEN || key[0] > 1 || key.iter().any(|digit| *digit > 0x7F) {
        return None;
    }
    Some(
        key.iter()
            .fold(0u64, |acc, digit| (acc << 7) | u64::from(*digit)),
    )
}

/// The key of revision `revision` of `id`: `id ‖ 0x00 ‖ revision`. Ids never
/// hold 0x00, so one id's keys are exactly those with its prefix.
pub fn revision_key(id: &ArticleId, revision: u64) -> Vec<u8> {
    let mut key = revision_prefix(id);
    key.extend_from_slice(&u64_key(revision));
    key
}

/// What every revision key of `id` starts with.
pub fn revision_prefix(id: &ArticleId) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.as_str().len() + 1 + U64_LEN);
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(0);
    key
}

/// Splits a revision key back into its id and revision.
pub fn parse_revision_key(key: &[u8]) -> Option<(ArticleId, u64)> {
    let split = key.len().checked_sub(U64_LEN + 1)?;
    if key[split] != 0 {
        return None;
    }
    let id = ArticleId::parse("key", std::str::from_utf8(&key[..split]).ok()?).ok()?;
    Some((id, parse_u64_key(&key[split + 1..])?))
}

/// Bytes of the seconds field: 64 bits in 7-bit digits.
const SECONDS_LEN: usize = 10;
/// Length of the fixed-width timestamp prefix of a date-index key.
pub const TIMESTAMP_LEN: usize = SECONDS_LEN + 4;

const SIGN_BIT: u64 = 1 << 63;

/// The fixed-width, order-preserving encoding of a timestamp.
pub fn timestamp_prefix(ts: Timestamp) -> [u8; TIMESTAMP_LEN] {
    let mut out = [0u8; TIMESTAMP_LEN];
    // Reinterpreting the bits and flipping the sign bit maps i64 order onto
    // u64 order: i64::MIN -> 0, -1 -> 2^63 - 1, 0 -> 2^63.
    let biased = (ts.seconds as u64) ^ SIGN_BIT;
    for (i, digit) in out[..SECONDS_LEN].iter_mut().enumerate() {
        let shift = 7 * (SECONDS_LEN - 1 - i);
        *digit = ((biased >> shift) & 0x7F) as u8;
    }
    out[SECONDS_LEN..].copy_from_slice(&ts.nanos.to_be_bytes());
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
    let (seconds, nanos) = ts.split_at(SECONDS_LEN);
    if seconds[0] > 1 || seconds.iter().any(|digit| *digit > 0x7F) {
        return None;
    }
    let biased = seconds
        .iter()
        .fold(0u64, |acc, digit| (acc << 7) | u64::from(*digit));
    let nanos = u32::from_be_bytes(nanos.try_into().ok()?);
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

/// Appends `value` so that it ends at a 0x00 no value byte can be taken
/// for: 0x00 is written 0x01 0x01 and 0x01 is written 0x01 0x02. Byte order
/// of the results is the order of the values, a value before every longer
/// value it starts, so `escaped(value) ‖ rest` keys sort by value first.
pub fn push_terminated(out: &mut Vec<u8>, value: &[u8]) {
    push_escaped(out, value);
    out.push(0);
}

/// Appends `value` escaped as in [`push_terminated`], without the end: the
/// prefix shared by the keys of every value that starts with `value`.
pub fn push_escaped(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        match byte {
            0 => out.extend_from_slice(&[1, 1]),
            1 => out.extend_from_slice(&[1, 2]),
            other => out.push(other),
        }
    }
}

/// Reads a value written by [`push_terminated`] from the start of `key`:
/// the value and the rest of the key; `None` when there is no end.
pub fn split_terminated(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut value = Vec::new();
    let mut i = 0;
    while i < key.len() {
        match key[i] {
            0 => return Some((value, &key[i + 1..])),
            1 => {
                value.push(match key.get(i + 1)? {
                    1 => 0,
                    2 => 1,
                    _ => return None,
                });
                i += 2;
            }
            other => {
                value.push(other);
                i += 1;
            }
        }
    }
    None
}

/// The key of an article in a label index (`sources`, `sections`):
/// `label ‖ 0x00 ‖ date key`, so one label's entries are a range in
/// (published_at, id) order.
pub fn label_key(label: &str, published_at: Timestamp, id: &ArticleId) -> Vec<u8> {
    let mut key = Vec::with_capacity(label.len() + 2 + TIMESTAMP_LEN + id.as_str().len());
    push_terminated(&mut key, label.as_bytes());
    key.extend_from_slice(&date_key(published_at, id));
    key
}

/// What every key of `label` in a label index starts with.
pub fn label_prefix(label: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(label.len() + 1);
    push_terminated(&mut key, label.as_bytes());
    key
}

/// The key of an article in the `urls` index: `surt ‖ 0x00 ‖ scheme ‖ 0x00
/// ‖ date key` (see [`super::url_key`]).
pub fn url_index_key(
    url: &super::url_key::UrlKey,
    published_at: Timestamp,
    id: &ArticleId,
) -> Vec<u8> {
    let mut key = url_scheme_prefix(url);
    key.extend_from_slice(&date_key(published_at, id));
    key
}

/// The `[start, end)` ranges of url-index keys a url query scans, in key
/// order: one per prefix of the query (EXACT: the whole key with its
/// scheme). Every engine that keeps url keys scans these.
pub fn url_scan_ranges(query: &super::url_key::UrlQuery) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .prefixes
        .iter()
        .map(|prefix| {
            let start = if query.whole {
                url_scheme_prefix(&super::url_key::UrlKey {
                    surt: prefix.clone(),
                    scheme: query.scheme.clone().unwrap_or_default(),
                })
            } else {
                let mut start = Vec::new();
                push_escaped(&mut start, prefix.as_bytes());
                start
            };
            let end = prefix_end(&start);
            (start, end)
        })
        .collect()
}

/// What the keys of exactly this url and scheme start with.
pub fn url_scheme_prefix(url: &super::url_key::UrlKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(url.surt.len() + url.scheme.len() + 2);
    push_terminated(&mut key, url.surt.as_bytes());
    push_terminated(&mut key, url.scheme.as_bytes());
    key
}

/// Splits a `urls` key into its url key and date key.
pub fn parse_url_index_key(key: &[u8]) -> Option<(super::url_key::UrlKey, &[u8])> {
    let (surt, rest) = split_terminated(key)?;
    let (scheme, date) = split_terminated(rest)?;
    Some((
        super::url_key::UrlKey {
            surt: String::from_utf8(surt).ok()?,
            scheme: String::from_utf8(scheme).ok()?,
        },
        date,
    ))
}

/// The key of a counter: `kind ‖ number`, the signed number sign-flipped in
/// 7-bit digits, so counters of one kind are in numeric order.
pub fn counter_key(kind: u8, number: i64) -> [u8; 1 + U64_LEN] {
    let mut key = [0u8; 1 + U64_LEN];
    key[0] = kind;
    key[1..].copy_from_slice(&u64_key((number as u64) ^ SIGN_BIT));
    key
}

/// The number of a [`counter_key`] of `kind`.
pub fn parse_counter_key(kind: u8, key: &[u8]) -> Option<i64> {
    let (&first, rest) = key.split_first()?;
    if first != kind {
        return None;
    }
    Some((parse_u64_key(rest)? ^ SIGN_BIT) as i64)
}

/// The key of a per-label counter: `kind ‖ label ‖ 0x00`.
pub fn label_counter_key(kind: u8, label: &str) -> Vec<u8> {
    let mut key = vec![kind];
    push_terminated(&mut key, label.as_bytes());
    key
}

/// The first key after every key that starts with `prefix` (no byte of
/// our keys is 0xFF, so incrementing the last byte does it).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    end
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

        #[test]
        fn u64_key_order_is_numeric_order_and_parses_back(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(u64_key(a).cmp(&u64_key(b)), a.cmp(&b));
            prop_assert_eq!(parse_u64_key(&u64_key(a)), Some(a));
            prop_assert!(u64_key(a).iter().all(|byte| *byte <= 0x7F));
        }

        #[test]
        fn revision_keys_sort_by_id_then_revision_and_parse_back(
            a in (id(), any::<u64>()), b in (id(), any::<u64>()),
        ) {
            let (ka, kb) = (revision_key(&a.0, a.1), revision_key(&b.0, b.1));
            prop_assert_eq!(parse_revision_key(&ka), Some(a.clone()));
            if a.0 == b.0 {
                prop_assert_eq!(ka.cmp(&kb), a.1.cmp(&b.1));
            }
            // One id's keys are exactly those with its prefix.
            prop_assert_eq!(ka.starts_with(&revision_prefix(&b.0)), a.0 == b.0);
        }
    }

    proptest! {
        #[test]
        fn terminated_values_keep_their_order_and_parse_back(
            a in proptest::collection::vec(0u8..4, 0..8),
            b in proptest::collection::vec(0u8..4, 0..8),
            rest in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let (mut ka, mut kb) = (Vec::new(), Vec::new());
            push_terminated(&mut ka, &a);
            push_terminated(&mut kb, &b);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            let mut prefix = Vec::new();
            push_escaped(&mut prefix, &b);
            prop_assert_eq!(ka.starts_with(&prefix), a.starts_with(&b));
            ka.extend_from_slice(&rest);
            let (value, tail) = split_terminated(&ka).unwrap();
            prop_assert_eq!(value, a);
            prop_assert_eq!(tail, &rest[..]);
        }

        #[test]
        fn counter_keys_sort_numerically(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(counter_key(b'd', a).cmp(&counter_key(b'd', b)), a.cmp(&b));
            prop_assert_eq!(parse_counter_key(b'd', &counter_key(b'd', a)), Some(a));
        }
    }

    #[test]
    fn no_key_holds_two_ff_bytes_in_a_row() {
        let id = ArticleId::parse("id", "zz~").unwrap();
        for seconds in [
            Timestamp::MIN_SECONDS,
            -4_294_967_296,
            -1,
            0,
            4_294_967_295,
            Timestamp::MAX_SECONDS,
        ] {
            let key = date_key(
                Timestamp {
                    seconds,
                    nanos: 999_999_999,
                },
                &id,
            );
            assert!(
                !key.windows(2).any(|w| w == [0xFF, 0xFF]),
                "{seconds}: {key:?}"
            );
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
