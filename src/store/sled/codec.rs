//! Record compression: zstd at level 3, with a dictionary trained from the
//! archive's own articles once there are enough of them.
//!
//! Why these choices (measured on the benchmark's news-like corpus, 5.5 KB
//! per article; BENCHMARKS.md "Compression"): lz4 keeps 66% of the bytes,
//! zstd level 3 45%, zstd level 3 with a 110 KB dictionary trained on 4,000
//! articles 36%, at about the same CPU as without; higher levels gain a few
//! percent for three times the CPU. A news article is small enough that a
//! dictionary (the words, names and phrasing the archive keeps using) is
//! worth more than the level.
//!
//! The fields a BASIC listing shows (every field but the body) are
//! compressed on their own in the date index, with a dictionary of their
//! own: 351 bytes an article become about 160.
//!
//! Every payload says which dictionary it was compressed with (0: none), and
//! dictionaries are kept in the store for good under their kind and id, so
//! a new one can be trained later without rewriting old records. A
//! dictionary is made durable before the first payload that uses it is
//! written.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{Arc, RwLock},
};

use zstd::{
    dict::{DecoderDictionary, EncoderDictionary},
    zstd_safe::{CCtx, DCtx},
};

/// The zstd level records are compressed at.
pub const LEVEL: i32 = 3;
/// What a payload holds; each kind has dictionaries of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A record's content fields (the body among them).
    Content = 1,
    /// The BASIC fields of a date-index entry.
    Basic = 2,
}

impl Kind {
    /// Largest dictionary trained for this kind.
    pub fn dictionary_bytes(self) -> usize {
        match self {
            Kind::Content => 110 * 1024,
            Kind::Basic => 64 * 1024,
        }
    }

    /// The inverse of `kind as u8`.
    pub fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Kind::Content),
            2 => Some(Kind::Basic),
            _ => None,
        }
    }
}
/// Largest record payload accepted when decompressing: well above any valid
/// article, so a damaged size field cannot make a read allocate gigabytes.
const MAX_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// How a payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As is.
    None,
    /// A zstd frame, with the dictionary of this id (0: none).
    Zstd { dictionary: u32 },
}

impl Compression {
    /// The (compression, dictionary) fields of a record header.
    pub fn to_fields(self) -> (u32, u32) {
        match self {
            Compression::None => (0, 0),
            Compression::Zstd { dictionary } => (1, dictionary),
        }
    }

    /// The inverse of [`Compression::to_fields`].
    pub fn from_fields(compression: u32, dictionary: u32) -> Option<Self> {
        match compression {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd { dictionary }),
            _ => None,
        }
    }
}

struct Dictionary {
    id: u32,
    encoder: EncoderDictionary<'static>,
    decoder: DecoderDictionary<'static>,
}

/// Compresses new payloads with the current dictionary of their kind and
/// decompresses any payload whose dictionary it knows. Shared by the async
/// side (which compresses before the writer sees an article) and every
/// reader.
#[derive(Default)]
pub struct Codec {
    /// Per kind, the dictionary new payloads use; none until one is trained.
    current: RwLock<HashMap<Kind, Arc<Dictionary>>>,
    /// Every dictionary a stored payload may name.
    known: RwLock<HashMap<(Kind, u32), Arc<Dictionary>>>,
}

thread_local! {
    // zstd contexts are costly to create and hold large buffers; one per
    // thread, reused for every payload.
    static COMPRESSOR: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DECOMPRESSOR: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

impl Codec {
    /// Registers a stored dictionary; per kind, the one with the highest id
    /// becomes the current one.
    pub fn add_dictionary(&self, kind: Kind, id: u32, bytes: &[u8]) {
        let dictionary = Arc::new(Dictionary {
            id,
            encoder: EncoderDictionary::copy(bytes, LEVEL),
            decoder: DecoderDictionary::copy(bytes),
        });
        self.known
            .write()
            .expect("the codec lock is never poisoned")
            .insert((kind, id), Arc::clone(&dictionary));
        let mut current = self.current.write().expect("never poisoned");
        if current.get(&kind).is_none_or(|c| c.id < id) {
            current.insert(kind, dictionary);
        }
    }

    /// The id of the dictionary new payloads of `kind` use (0: none).
    pub fn current_dictionary(&self, kind: Kind) -> u32 {
        self.current
            .read()
            .expect("never poisoned")
            .get(&kind)
            .map_or(0, |d| d.id)
    }

    /// Compresses a payload with the current dictionary of its kind.
    pub fn compress(&self, kind: Kind, payload: &[u8]) -> (Compression, Vec<u8>) {
        let dictionary = self
            .current
            .read()
            .expect("never poisoned")
            .get(&kind)
            .cloned();
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(payload.len()));
        let result = COMPRESSOR.with(|cctx| {
            let mut cctx = cctx.borrow_mut();
            match &dictionary {
                Some(d) => cctx.compress_using_cdict(&mut out, payload, d.encoder.as_cdict()),
                None => cctx.compress(&mut out, payload, LEVEL),
            }
        });
        match result {
            // Incompressible text is kept as it is.
            Ok(_) if out.len() < payload.len() => (
                Compression::Zstd {
                    dictionary: dictionary.map_or(0, |d| d.id),
                },
                out,
            ),
            _ => (Compression::None, payload.to_vec()),
        }
    }

    /// Decompresses a payload.
    ///
    /// # Errors
    /// A description of what is wrong: an unknown dictionary, a frame that
    /// does not decode.
    pub fn decompress(
        &self,
        kind: Kind,
        compression: Compression,
        stored: &[u8],
    ) -> Result<Vec<u8>, String> {
        let dictionary = match compression {
            Compression::None => return Ok(stored.to_vec()),
            Compression::Zstd { dictionary: 0 } => None,
            Compression::Zstd { dictionary } => Some(
                self.known
                    .read()
                    .expect("never poisoned")
                    .get(&(kind, dictionary))
                    .cloned()
                    .ok_or_else(|| format!("compression dictionary {dictionary} is missing"))?,
            ),
        };
        let size = match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(size)) if size <= MAX_PAYLOAD_BYTES => size as usize,
            Ok(Some(size)) => return Err(format!("payload claims {size} bytes")),
            _ => return Err("payload is not a zstd frame with its size".into()),
        };
        let mut out = Vec::with_capacity(size);
        DECOMPRESSOR
            .with(|dctx| {
                let mut dctx = dctx.borrow_mut();
                match &dictionary {
                    Some(d) => dctx.decompress_using_ddict(&mut out, stored, d.decoder.as_ddict()),
                    None => dctx.decompress(&mut out, stored),
                }
            })
            .map_err(|code| {
                format!(
                    "payload does not decompress: {}",
                    zstd::zstd_safe::get_error_name(code)
                )
            })?;
        Ok(out)
    }
}

/// Trains a dictionary of `kind` from sample payloads.
///
/// # Errors
/// zstd's reason when the samples cannot make one (too few, too small).
pub fn train(kind: Kind, samples: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    zstd::dict::from_samples(samples, kind.dictionary_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prose(i: usize) -> Vec<u8> {
        format!(
            "Article {i}. The council met on Tuesday to discuss the harbour, the ferry \
             timetable and the budget for {}. “We will decide next week,” said the mayor, \
             whose office declined to comment further on item {}.",
            2000 + i % 30,
            i * 7
        )
        .repeat(3)
        .into_bytes()
    }

    #[test]
    fn payloads_round_trip_with_and_without_a_dictionary() {
        let codec = Codec::default();
        let (plain, bytes) = codec.compress(Kind::Content, &prose(1));
        assert_eq!(plain, Compression::Zstd { dictionary: 0 });
        assert_eq!(
            codec.decompress(Kind::Content, plain, &bytes).unwrap(),
            prose(1)
        );

        let samples: Vec<Vec<u8>> = (0..500).map(prose).collect();
        codec.add_dictionary(Kind::Content, 7, &train(Kind::Content, &samples).unwrap());
        let (with, dict_bytes) = codec.compress(Kind::Content, &prose(9999));
        assert_eq!(with, Compression::Zstd { dictionary: 7 });
        assert!(dict_bytes.len() < bytes.len());
        assert_eq!(
            codec.decompress(Kind::Content, with, &dict_bytes).unwrap(),
            prose(9999)
        );
        // Payloads written before the dictionary still read; the other kind
        // has no dictionary yet.
        assert_eq!(
            codec.decompress(Kind::Content, plain, &bytes).unwrap(),
            prose(1)
        );
        assert_eq!(codec.current_dictionary(Kind::Basic), 0);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let codec = Codec::default();
        let (how, bytes) = codec.compress(Kind::Content, &prose(3));
        assert!(codec
            .decompress(Kind::Content, how, &bytes[..bytes.len() - 4])
            .is_err());
        // A flipped byte may decode to other text (the record's content hash
        // catches that); it must never panic.
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x5A;
            let _ = codec.decompress(Kind::Content, how, &flipped);
        }
        assert!(codec
            .decompress(Kind::Content, Compression::Zstd { dictionary: 5 }, &bytes)
            .unwrap_err()
            .contains("dictionary 5 is missing"));
        assert!(codec.decompress(Kind::Content, how, b"not zstd").is_err());
        let (none, raw) = codec.compress(Kind::Basic, b"x");
        assert_eq!(none, Compression::None, "incompressible text is kept raw");
        assert_eq!(codec.decompress(Kind::Basic, none, &raw).unwrap(), b"x");
    }
}
