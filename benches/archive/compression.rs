//! The measurement behind the store's compression choice (zstd level 3
//! with a dictionary trained from the archive's own articles,
//! `src/store/sled/codec.rs`), printed after the calibration so it can be
//! re-run on any machine: `cargo bench --bench archive -- --corpus-only`.
//!
//! Each candidate compresses the same articles one at a time (a record is
//! compressed alone, so it can be read alone), encoded as the protobuf
//! `Article` (about what the store's record payload holds: every content
//! field). The dictionary is trained, as the store trains it, from 4,096
//! other articles of the corpus with zstd's trainer at 110 KB. Against no
//! compression (the baseline): the share of bytes kept, and CPU time per
//! article to compress and to decompress, on one core.

use std::time::Instant;

use prost::Message;
use zstd::{
    bulk::{Compressor, Decompressor},
    dict::from_samples,
};

use crate::corpus;

/// Articles measured, and where their numbers start: far from the ones the
/// dictionary is trained on, as a dictionary trained on an archive's first
/// articles then compresses the later ones.
const MEASURED: usize = 2_000;
const MEASURED_FROM: usize = 500_000;
/// What the store trains a content dictionary from, and its size.
const TRAINING_ARTICLES: usize = 4_096;
const DICTIONARY_BYTES: usize = 110 * 1024;

/// Compresses one payload.
type Compress = Box<dyn FnMut(&[u8]) -> Vec<u8>>;
/// Decompresses one payload, given its original size.
type Decompress = Box<dyn FnMut(&[u8], usize) -> Vec<u8>>;

struct Candidate {
    name: String,
    compress: Compress,
    decompress: Decompress,
}

fn zstd(level: i32, dictionary: Option<&[u8]>) -> Candidate {
    let dictionary = dictionary.unwrap_or_default().to_vec();
    let name = if dictionary.is_empty() {
        format!("zstd level {level}")
    } else {
        format!("zstd level {level}, dictionary")
    };
    let mut compressor = Compressor::with_dictionary(level, &dictionary).unwrap();
    let mut decompressor = Decompressor::with_dictionary(&dictionary).unwrap();
    Candidate {
        name,
        compress: Box::new(move |raw| compressor.compress(raw).unwrap()),
        decompress: Box::new(move |packed, size| decompressor.decompress(packed, size).unwrap()),
    }
}

fn lz4() -> Candidate {
    Candidate {
        name: "lz4 (lz4_flex block)".into(),
        compress: Box::new(lz4_flex::block::compress),
        decompress: Box::new(|packed, size| lz4_flex::block::decompress(packed, size).unwrap()),
    }
}

fn none() -> Candidate {
    Candidate {
        name: "none (baseline)".into(),
        compress: Box::new(|raw| raw.to_vec()),
        decompress: Box::new(|packed, _| packed.to_vec()),
    }
}

/// Prints the table.
pub fn run() {
    let started = Instant::now();
    let payloads: Vec<Vec<u8>> = (0..MEASURED)
        .map(|i| corpus::article(MEASURED_FROM + i).encode_to_vec())
        .collect();
    let raw_bytes: usize = payloads.iter().map(Vec::len).sum();
    let training: Vec<Vec<u8>> = (0..TRAINING_ARTICLES)
        .map(|i| corpus::article(i).encode_to_vec())
        .collect();
    let dictionary = from_samples(&training, DICTIONARY_BYTES).unwrap();

    let candidates = vec![
        none(),
        lz4(),
        zstd(1, None),
        zstd(3, None),
        zstd(6, None),
        zstd(19, None),
        zstd(1, Some(&dictionary)),
        zstd(3, Some(&dictionary)),
        zstd(6, Some(&dictionary)),
    ];
    println!(
        "compression of single articles ({MEASURED} protobuf Articles, {:.1} KB on average; \
         dictionary {} KB trained from {TRAINING_ARTICLES} others)",
        raw_bytes as f64 / MEASURED as f64 / 1e3,
        dictionary.len() / 1024,
    );
    println!("  candidate                          bytes kept   ratio  compress µs  decompress µs");
    for mut candidate in candidates {
        let begin = Instant::now();
        let packed: Vec<Vec<u8>> = payloads.iter().map(|p| (candidate.compress)(p)).collect();
        let compress = begin.elapsed();
        let begin = Instant::now();
        for (packed, raw) in packed.iter().zip(&payloads) {
            let back = (candidate.decompress)(packed, raw.len());
            assert_eq!(back.len(), raw.len(), "{} round trip", candidate.name);
        }
        let decompress = begin.elapsed();
        let packed_bytes: usize = packed.iter().map(Vec::len).sum();
        println!(
            "  {:<34} {:>9.1}% {:>7.2} {:>12.1} {:>14.1}",
            candidate.name,
            packed_bytes as f64 / raw_bytes as f64 * 100.0,
            raw_bytes as f64 / packed_bytes as f64,
            compress.as_secs_f64() * 1e6 / MEASURED as f64,
            decompress.as_secs_f64() * 1e6 / MEASURED as f64,
        );
    }
    println!(
        "  (measured in {:.1} s, dictionary training included)",
        started.elapsed().as_secs_f64()
    );
}
