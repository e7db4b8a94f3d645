//! A line of a bulk-load file, in either JSON shape.
#![no_main]

use article_archive::cli::jsonl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(article) = jsonl::parse_line(line) {
            let _ = jsonl::to_line(&article);
        }
    }
});
