//! The model-based property test, on both engines: random sequences of
//! ingest, deletion, Get, revision listing and paged List, sent over TCP to
//! a real server, against a sorted in-memory model. Every answer agrees, and
//! the store's own consistency check finds nothing at the end.

mod common;

use std::collections::BTreeMap;

use article_archive::proto::{self, ArticleView, IngestOutcome, SortOrder};
use common::*;
use proptest::{collection::vec, option, prelude::*};
use tonic::Code;

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

/// One step of a run.
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
    Delete {
        id: u8,
        allow_reingest: bool,
    },
    Get {
        id: u8,
    },
    Revisions {
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
        8 => (0u8..10, 0usize..TIMES.len(), 0u32..3, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(id, time, nanos, variant, blank)| Op::Ingest { id, time, nanos, variant, blank }),
        1 => (0u8..10, any::<bool>()).prop_map(|(id, allow_reingest)| Op::Delete { id, allow_reingest }),
        4 => (0u8..12).prop_map(|id| Op::Get { id }),
        1 => (0u8..12).prop_map(|id| Op::Revisions { id }),
        2 => (option::of(0usize..TIMES.len()), option::of(0usize..TIMES.len()), any::<bool>(), 1i32..6)
            .prop_map(|(start, end, newest_first, page_size)| Op::List { start, end, newest_first, page_size }),
    ]
}

/// What the model knows of an id.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Live {
        at: (i64, u32),
        title: String,
        revision: u64,
    },
    Deleted {
        allow_reingest: bool,
    },
}

fn run_case(engine: Engine, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let Some(mut server) = TestServer::start_on(engine, Default::default()).await else {
            return Ok(());
        };
        let client = &mut server.client;
        let mut model: BTreeMap<String, Entry> = BTreeMap::new();
        // Versions the store holds: every revision of every live article.
        for op in ops {
            match op {
                Op::Ingest {
                    id,
                    time,
                    nanos,
                    variant,
                    blank,
                } => {
                    let mut raw = article(id, time, nanos, variant);
                    if blank {
                        raw.title = " ".into();
                    }
                    let key = format!("id{id}");
                    let at = (TIMES[time], nanos);
                    let (expected, next) = match (blank, model.get(&key)) {
                        (true, _) => (IngestOutcome::Rejected, None),
                        (
                            false,
                            Some(Entry::Deleted {
                                allow_reingest: false,
                            }),
                        ) => (IngestOutcome::Rejected, None),
                        (false, None | Some(Entry::Deleted { .. })) => {
                            (IngestOutcome::Created, Some(1))
                        }
                        (
                            false,
                            Some(Entry::Live {
                                at: old_at,
                                title,
                                revision,
                            }),
                        ) => {
                            if *old_at == at && *title == raw.title {
                                (IngestOutcome::Unchanged, None)
                            } else {
                                (IngestOutcome::Updated, Some(revision + 1))
                            }
                        }
                    };
                    let title = raw.title.clone();
                    let got = ingest(client, vec![raw]).await;
                    prop_assert_eq!(outcome(&got[0]), expected, "{:?}", got[0]);
                    if let Some(revision) = next {
                        model.insert(
                            key,
                            Entry::Live {
                                at,
                                title,
                                revision,
                            },
                        );
                    }
                }
                Op::Delete { id, allow_reingest } => {
                    let key = format!("id{id}");
                    let answer = client
                        .delete_article(proto::DeleteArticleRequest {
                            id: key.clone(),
                            reason: "model".into(),
                            allow_reingest,
                        })
                        .await;
                    match (answer, model.get(&key)) {
                        (Ok(_), Some(Entry::Live { .. })) => {
                            model.insert(key, Entry::Deleted { allow_reingest });
                        }
                        (Err(status), None | Some(Entry::Deleted { .. })) => {
                            prop_assert_eq!(status.code(), Code::NotFound)
                        }
                        (answer, entry) => prop_assert!(
                            false,
                            "delete {}: {:?} but the model has {:?}",
                            key,
                            answer,
                            entry
                        ),
                    }
                }
                Op::Get { id } => {
                    let key = format!("id{id}");
                    let answer = client
                        .get_article(proto::GetArticleRequest {
                            id: key.clone(),
                            revision: 0,
                        })
                        .await;
                    match (answer, model.get(&key)) {
                        (Err(status), None | Some(Entry::Deleted { .. })) => {
                            prop_assert_eq!(status.code(), Code::NotFound)
                        }
                        (
                            Ok(response),
                            Some(Entry::Live {
                                at,
                                title,
                                revision,
                            }),
                        ) => {
                            let got = response.into_inner().article.unwrap();
                            let ts = got.published_at.unwrap();
                            prop_assert_eq!((ts.seconds, ts.nanos as u32), *at);
                            prop_assert_eq!(&got.title, title);
                            prop_assert_eq!(got.revision, *revision);
                        }
                        (answer, entry) => prop_assert!(
                            false,
                            "get {}: {:?} but the model has {:?}",
                            key,
                            answer.map(|_| ()),
                            entry
                        ),
                    }
                }
                Op::Revisions { id } => {
                    let key = format!("id{id}");
                    let answer = client
                        .list_article_revisions(proto::ListArticleRevisionsRequest {
                            id: key.clone(),
                            page_size: 1000,
                            view: ArticleView::Basic as i32,
                            ..Default::default()
                        })
                        .await;
                    match (answer, model.get(&key)) {
                        (Err(status), None | Some(Entry::Deleted { .. })) => {
                            prop_assert_eq!(status.code(), Code::NotFound)
                        }
                        (Ok(response), Some(Entry::Live { revision, .. })) => {
                            let listed: Vec<u64> = response
                                .into_inner()
                                .revisions
                                .iter()
                                .map(|r| r.revision)
                                .collect();
                            let expected: Vec<u64> = (1..=*revision).rev().collect();
                            prop_assert_eq!(listed, expected);
                        }
                        (answer, entry) => prop_assert!(
                            false,
                            "revisions {}: {:?} but the model has {:?}",
                            key,
                            answer.map(|_| ()),
                            entry
                        ),
                    }
                }
                Op::List {
                    start,
                    end,
                    newest_first,
                    page_size,
                } => {
                    let (start, end) = match (start, end) {
                        (Some(s), Some(e)) if s > e => (Some(e), Some(s)),
                        other => other,
                    };
                    let ts = |i: usize| prost_types::Timestamp {
                        seconds: TIMES[i],
                        nanos: 0,
                    };
                    let mut request = proto::ListArticlesRequest {
                        start_time: start.map(ts),
                        end_time: end.map(ts),
                        page_size,
                        order: if newest_first {
                            SortOrder::NewestFirst
                        } else {
                            SortOrder::OldestFirst
                        } as i32,
                        ..Default::default()
                    };
                    let mut walked = Vec::new();
                    for _ in 0..=model.len() {
                        let page = client
                            .list_articles(request.clone())
                            .await
                            .unwrap()
                            .into_inner();
                        walked.extend(page.articles.into_iter().map(|a| a.id));
                        if page.next_page_token.is_empty() {
                            break;
                        }
                        request.page_token = page.next_page_token;
                    }
                    let lower = start.map_or((i64::MIN, 0), |i| (TIMES[i], 0));
                    let mut expected: Vec<_> = model
                        .iter()
                        .filter_map(|(id, entry)| match entry {
                            Entry::Live { at, .. } => Some((*at, id.clone())),
                            Entry::Deleted { .. } => None,
                        })
                        .filter(|(at, _)| *at >= lower && end.is_none_or(|e| *at < (TIMES[e], 0)))
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
        let report = server.store.verify().await.unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        // Every revision of every live article is held; a deletion erases
        // the content of all of an article's revisions.
        let held: u64 = model
            .values()
            .map(|entry| match entry {
                Entry::Live { revision, .. } => *revision,
                Entry::Deleted { .. } => 0,
            })
            .sum();
        prop_assert_eq!(report.articles + report.revision_entries, held);
        server.stop().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sled_answers_match_an_in_memory_model(ops in vec(op(), 1..80)) {
        run_case(Engine::Sled, ops)?;
    }

    #[test]
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL is not installed (apt-get install postgresql)"
    )]
    fn postgres_answers_match_an_in_memory_model(ops in vec(op(), 1..80)) {
        run_case(Engine::Postgres, ops)?;
    }
}
