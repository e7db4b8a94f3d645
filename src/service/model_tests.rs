//! The model-based property test: random sequences of ingest, Get and paged
//! List through the real handlers and store, against a sorted in-memory map.

use std::collections::BTreeMap;

use proptest::{collection::vec, option, prelude::*};

use super::*;
use crate::{
    article::Article,
    proto::SortOrder,
    store::{StoreConfig, WriteOutcome},
};

/// Publication times with pre-1970 dates, the epoch and its neighbours,
/// so ties and sign handling are exercised.
const TIMES: [i64; 6] = [-3_755_289_600, -86_400, -1, 0, 1, 1_700_000_000];

fn article(id: u8, time: usize, nanos: u32, variant: bool) -> proto::Article {
    proto::Article {
        id: format!("id{id}"),
        title: if variant { "one".into() } else { "two".into() },
        body: "body".into(),
        published_at: Some(prost_types::Timestamp {
            seconds: TIMES[time],
            nanos: nanos as i32,
        }),
        ..Default::default()
    }
}

/// One step of a model-based run.
#[derive(Debug, Clone)]
enum Op {
    /// Ingest id with (time, nanos, title variant); `blank` makes it invalid.
    Ingest {
        id: u8,
        time: usize,
        nanos: u32,
        variant: bool,
        blank: bool,
    },
    Get {
        id: u8,
    },
    List {
        start: Option<usize>,
        end: Option<usize>,
        newest_first: bool,
        page_size: i32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..10, 0usize..TIMES.len(), 0u32..3, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(id, time, nanos, variant, blank)| Op::Ingest { id, time, nanos, variant, blank }),
        2 => (0u8..12).prop_map(|id| Op::Get { id }),
        1 => (option::of(0usize..TIMES.len()), option::of(0usize..TIMES.len()), any::<bool>(), 1i32..6)
            .prop_map(|(start, end, newest_first, page_size)| Op::List { start, end, newest_first, page_size }),
    ]
}

/// The model: id -> (published_at, title) of the latest accepted version.
type Model = BTreeMap<String, ((i64, u32), String)>;

fn service_over(store: &Store) -> (ArchiveService, mpsc::Sender<()>, watch::Sender<bool>) {
    let (in_flight, _) = mpsc::channel(1);
    let (stop, stop_rx) = watch::channel(false);
    let hooks = ShutdownHooks {
        stop_streams: stop_rx.clone(),
        draining: stop_rx,
        in_flight: in_flight.downgrade(),
    };
    (
        ArchiveService::new(
            store.clone(),
            hooks,
            Tokens::default(),
            CallLimits::default(),
        ),
        in_flight,
        stop,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random sequences of ingest (new, update, unchanged, rejected), Get
    /// and paged List in both orders, against the real store and
    /// handlers and against a sorted map: every answer agrees.
    #[test]
    fn every_answer_matches_an_in_memory_model(ops in vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (service, _in_flight, _stop) = service_over(&store);
        let mut model = Model::new();
        let mut versions = 0usize;
        runtime.block_on(async {
            for op in ops {
                match op {
                    Op::Ingest { id, time, nanos, variant, blank } => {
                        let mut raw = article(id, time, nanos, variant);
                        if blank {
                            raw.title = " ".into();
                        }
                        let key = format!("id{id}");
                        let at = (TIMES[time], nanos);
                        let expected = match (blank, model.get(&key)) {
                            (true, _) => None,
                            (false, None) => Some(WriteOutcome::Created),
                            (false, Some((old_at, old_title))) if *old_at == at && *old_title == raw.title => Some(WriteOutcome::Unchanged),
                            (false, Some(_)) => Some(WriteOutcome::Updated),
                        };
                        match Article::from_proto(raw.clone()) {
                            Err(_) => prop_assert_eq!(expected, None),
                            Ok(a) => {
                                let outcome = store.submit(a).await.unwrap().outcome().await.unwrap();
                                prop_assert_eq!(Some(outcome.clone()), expected);
                                if outcome != WriteOutcome::Unchanged {
                                    versions += 1;
                                }
                                model.insert(key, (at, raw.title));
                            }
                        }
                    }
                    Op::Get { id } => {
                        let answer = service.get_article(Request::new(proto::GetArticleRequest { id: format!("id{id}"), revision: 0 })).await;
                        match (answer, model.get(&format!("id{id}"))) {
                            (Err(status), None) => prop_assert_eq!(status.code(), Code::NotFound),
                            (Ok(response), Some((at, title))) => {
                                let got = response.into_inner().article.unwrap();
                                let ts = got.published_at.unwrap();
                                prop_assert_eq!((ts.seconds, ts.nanos as u32), *at);
                                prop_assert_eq!(&got.title, title);
                            }
                            (answer, expected) => prop_assert!(false, "get id{}: {:?} but model has {:?}", id, answer.map(|_| ()), expected),
                        }
                    }
                    Op::List { start, end, newest_first, page_size } => {
                        let (start, end) = match (start, end) {
                            (Some(s), Some(e)) if s > e => (Some(e), Some(s)),
                            other => other,
                        };
                        let ts = |i: usize| prost_types::Timestamp { seconds: TIMES[i], nanos: 0 };
                        let mut request = proto::ListArticlesRequest {
                            start_time: start.map(ts),
                            end_time: end.map(ts),
                            page_size,
                            order: if newest_first { SortOrder::NewestFirst } else { SortOrder::OldestFirst } as i32,
                            ..Default::default()
                        };
                        let mut walked = Vec::new();
                        for _ in 0..=model.len() {
                            let page = service.list_articles(Request::new(request.clone())).await.unwrap().into_inner();
                            walked.extend(page.articles.into_iter().map(|a| a.id));
                            if page.next_page_token.is_empty() {
                                break;
                            }
                            request.page_token = page.next_page_token;
                        }
                        let lower = start.map_or((i64::MIN, 0), |i| (TIMES[i], 0));
                        let mut expected: Vec<_> = model
                            .iter()
                            .filter(|(_, (at, _))| *at >= lower && end.is_none_or(|e| *at < (TIMES[e], 0)))
                            .map(|(id, (at, _))| (*at, id.clone()))
                            .collect();
                        expected.sort();
                        if newest_first {
                            expected.reverse();
                        }
                        let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
                        prop_assert_eq!(walked, expected);
                    }
                }
            }
            Ok(())
        })?;
        let report = store.check().unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        // The log keeps every version: one record per CREATED or UPDATED.
        prop_assert_eq!(report.records as usize, versions);
    }
}
