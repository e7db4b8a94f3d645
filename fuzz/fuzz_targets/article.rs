//! An ingested article: any protobuf bytes, decoded as the server decodes
//! them, then validated; a valid one must hash and derive an id.
#![no_main]

use article_archive::{article::Article, proto};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = proto::IngestArticlesRequest::decode(data) {
        if let Some(raw) = request.article {
            if let Ok(article) = Article::from_proto(raw) {
                let _ = article.content().sha256();
                let _ = article.content().derived_id();
            }
        }
    }
});
