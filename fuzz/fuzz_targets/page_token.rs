//! Page tokens come straight from clients: any text must decode to a token
//! this archive signed, or to an error.
#![no_main]

use article_archive::page_token::PageToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = [7u8; 32];
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PageToken::decode(text, &key);
    }
});
