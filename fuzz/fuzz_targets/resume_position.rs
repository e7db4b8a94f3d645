//! The export resume position, as the server checks it: an id and a time.
#![no_main]

use article_archive::{
    article::{ArticleId, Timestamp},
    proto,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(position) = proto::ExportPosition::decode(data) {
        let _ = ArticleId::parse("resume_after.id", &position.id);
        if let Some(ts) = position.published_at {
            let _ = Timestamp::from_proto("resume_after.published_at", &ts);
        }
    }
});
