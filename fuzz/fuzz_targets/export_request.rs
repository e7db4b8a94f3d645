//! An ExportArticles request as the server parses it (range, order and the
//! resume position): any bytes decode to a validated query or an error.
#![no_main]

use article_archive::{proto, service::query::ExportQuery};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = proto::ExportArticlesRequest::decode(data) {
        if let Ok(query) = ExportQuery::parse(&request) {
            // A position that parsed lies inside the range it resumes.
            if let Some(position) = &query.resume_after {
                assert!(query.range.contains(position.published_at));
            }
        }
    }
});
