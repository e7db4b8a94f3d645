//! The query indexes: labels, urls and counters.
//!
//! - `sources`: `lower-cased source ‖ 0 ‖ date key` and `sections`:
//!   `section ‖ 0 ‖ date key` ([`keys::label_key`]), one entry per article,
//!   so the articles of one source or section are a range in date order;
//! - `urls`: `host-reversed url ‖ 0 ‖ scheme ‖ 0 ‖ date key`
//!   ([`keys::url_index_key`], [`super::super::url_key`]), one entry per
//!   article with a url;
//! - `counts`: articles per UTC day, month and year (`d`, `m`, `y` ‖ bucket
//!   number) and per source and section (`s`, `c` ‖ label), u64
//!   big-endian; a counter that reaches 0 is removed.
//!
//! All of them describe the *current* version of each live article, so
//! they are derived from the `dates` tree, and the writer changes them in
//! the same transaction as `dates` ([`QueryChanges`]). The values are
//! empty: an entry's date key leads to the article's date entry, which
//! holds everything a page needs.
//!
//! A filtered page is planned on the indexed field (sources or sections)
//! whose per-label counters add up to fewer articles; the other fields of
//! the filter are checked on the candidates. A filter on unindexed fields
//! only (languages, tags, authors) walks the date range, within the scan
//! budget of a page.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
};

use super::{codec::Codec, index::DateEntry, Trees};
use crate::{
    article::{ArticleContent, ArticleId, Timestamp},
    error::{Error, Result},
    store::{
        calendar::Interval,
        keys,
        url_key::{UrlKey, UrlQuery},
        DateRange, Filter, Order, Position, RepairReport,
    },
};

pub(crate) const SOURCES_TREE: &str = "sources";
pub(crate) const SECTIONS_TREE: &str = "sections";
pub(crate) const URLS_TREE: &str = "urls";
pub(crate) const COUNTS_TREE: &str = "counts";
/// Set in `meta` once the query indexes describe every article; a store
/// without it (made before they existed, or whose rebuild was interrupted)
/// gets them built when it is opened.
pub(crate) const QUERY_INDEXES_KEY: &str = "query_indexes";

/// Counter kind of the per-source counters.
const SOURCE_COUNT: u8 = b's';
/// Counter kind of the per-section counters.
const SECTION_COUNT: u8 = b'c';
const INTERVALS: [Interval; 3] = [Interval::Day, Interval::Month, Interval::Year];

/// What the query indexes hold of one article version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Labels {
    /// The source, lower-cased (sources are compared as host names are).
    pub source: String,
    /// The section as stored.
    pub section: String,
    /// The url's index key, when it has a url.
    pub url: Option<UrlKey>,
}

impl Labels {
    pub fn of(content: &ArticleContent) -> Self {
        Self {
            source: content.source.to_ascii_lowercase(),
            section: content.section.clone(),
            url: UrlKey::of(&content.url),
        }
    }
}

/// The query-index changes of one batch, in the order of its operations.
#[derive(Default)]
pub(crate) struct QueryChanges {
    sources: sled::Batch,
    sections: sled::Batch,
    urls: sled::Batch,
    counts: HashMap<Vec<u8>, i64>,
}

impl QueryChanges {
    /// An article's current version now is `labels` at `at`.
    pub fn add(&mut self, labels: &Labels, at: Timestamp, id: &ArticleId) {
        self.sources
            .insert(keys::label_key(&labels.source, at, id), &[][..]);
        self.sections
            .insert(keys::label_key(&labels.section, at, id), &[][..]);
        if let Some(url) = &labels.url {
            self.urls.insert(keys::url_index_key(url, at, id), &[][..]);
        }
        self.count(labels, at, 1);
    }

    /// An article's current version no longer is `labels` at `at`.
    pub fn remove(&mut self, labels: &Labels, at: Timestamp, id: &ArticleId) {
        self.sources.remove(keys::label_key(&labels.source, at, id));
        self.sections
            .remove(keys::label_key(&labels.section, at, id));
        if let Some(url) = &labels.url {
            self.urls.remove(keys::url_index_key(url, at, id));
        }
        self.count(labels, at, -1);
    }

    fn count(&mut self, labels: &Labels, at: Timestamp, delta: i64) {
        for interval in INTERVALS {
            let key = keys::counter_key(interval.counter_kind(), interval.bucket(at));
            *self.counts.entry(key.to_vec()).or_default() += delta;
        }
        *self
            .counts
            .entry(keys::label_counter_key(SOURCE_COUNT, &labels.source))
            .or_default() += delta;
        *self
            .counts
            .entry(keys::label_counter_key(SECTION_COUNT, &labels.section))
            .or_default() += delta;
    }

    /// The batches for `sources`, `sections`, `urls` and `counts`. The
    /// counters are read here, outside the transaction: the writer is the
    /// only one that changes them.
    pub fn into_batches(self, counts: &sled::Tree) -> Result<[sled::Batch; 4]> {
        let mut counters = sled::Batch::default();
        for (key, delta) in self.counts {
            if delta == 0 {
                continue;
            }
            let now = read_counter(counts, &key)?;
            let next = now
                .checked_add_signed(delta)
                .ok_or_else(|| Error::Corrupt {
                    key: format!("{COUNTS_TREE}/{key:?}"),
                    reason: format!("counter {now} cannot change by {delta}"),
                })?;
            if next == 0 {
                counters.remove(key);
            } else {
                counters.insert(key, &next.to_be_bytes()[..]);
            }
        }
        Ok([self.sources, self.sections, self.urls, counters])
    }
}

/// Every live article: the sum of the per-year counters (each article is
/// counted in the year it is published; a deletion takes it out).
pub(crate) fn live_articles(counts: &sled::Tree) -> Result<u64> {
    let mut live = 0u64;
    for entry in counts.scan_prefix([Interval::Year.counter_kind()]) {
        let (key, value) = entry?;
        live = live.saturating_add(counter_value(&key, &value)?);
    }
    Ok(live)
}

fn counter_value(key: &[u8], value: &[u8]) -> Result<u64> {
    value
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt {
            key: format!("{COUNTS_TREE}/{key:?}"),
            reason: "a counter is 8 bytes".into(),
        })
}

fn read_counter(counts: &sled::Tree, key: &[u8]) -> Result<u64> {
    match counts.get(key)? {
        None => Ok(0),
        Some(bytes) => counter_value(key, &bytes),
    }
}

/// The labels of `id`'s current version as the `dates` tree holds it.
pub(crate) fn stored_labels(
    trees: &Trees,
    codec: &Codec,
    id: &ArticleId,
    published_at: Timestamp,
) -> Result<Option<Labels>> {
    let key = keys::date_key(published_at, id);
    let Some(bytes) = trees.dates.get(&key)? else {
        return Ok(None);
    };
    let entry = DateEntry::decode(codec, published_at, id.clone(), &bytes).map_err(|reason| {
        Error::Corrupt {
            key: format!("dates/{id}"),
            reason,
        }
    })?;
    Ok(Some(Labels::of(&entry.article.content)))
}

/// Date keys from several iterators, merged into `order`.
struct Merge {
    heads: Vec<Option<Vec<u8>>>,
    iters: Vec<DateKeys>,
    order: Order,
}

type DateKeys = Box<dyn Iterator<Item = Result<Vec<u8>>> + Send>;

impl Merge {
    fn new(mut iters: Vec<DateKeys>, order: Order) -> Result<Self> {
        let heads = iters
            .iter_mut()
            .map(|iter| iter.next().transpose())
            .collect::<Result<_>>()?;
        Ok(Self {
            heads,
            iters,
            order,
        })
    }
}

impl Iterator for Merge {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let pick = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, head)| head.as_ref().map(|key| (i, key)))
            .reduce(|a, b| {
                let b_first = match self.order {
                    Order::OldestFirst => b.1 < a.1,
                    Order::NewestFirst => b.1 > a.1,
                };
                if b_first {
                    b
                } else {
                    a
                }
            })
            .map(|(i, _)| i)?;
        let next = match self.iters[pick].next().transpose() {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        std::mem::replace(&mut self.heads[pick], next).map(Ok)
    }
}

/// The date keys of one label's entries in `range`, in `order`, strictly
/// after `after`.
fn label_range(
    tree: &sled::Tree,
    label: &str,
    range: DateRange,
    order: Order,
    after: Option<&Position>,
) -> DateKeys {
    let prefix = keys::label_prefix(label);
    let with = |suffix: &[u8]| {
        let mut key = prefix.clone();
        key.extend_from_slice(suffix);
        key
    };
    let key_of = |p: &Position| with(&keys::date_key(p.published_at, &p.id));
    let lower = match (order, after) {
        (Order::OldestFirst, Some(p)) => Bound::Excluded(key_of(p)),
        _ => Bound::Included(
            range
                .start
                .map_or_else(|| prefix.clone(), |t| with(&keys::timestamp_prefix(t))),
        ),
    };
    let upper = match (order, after) {
        (Order::NewestFirst, Some(p)) => Bound::Excluded(key_of(p)),
        _ => Bound::Excluded(range.end.map_or_else(
            || keys::prefix_end(&prefix),
            |t| with(&keys::timestamp_prefix(t)),
        )),
    };
    let empty = match (&lower, &upper) {
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
        _ => false,
    };
    if empty {
        return Box::new(std::iter::empty());
    }
    let skip = prefix.len();
    let iter = tree.range::<Vec<u8>, _>((lower, upper));
    let to_date_key = move |entry: sled::Result<(sled::IVec, sled::IVec)>| {
        entry
            .map(|(key, _)| key[skip..].to_vec())
            .map_err(Error::from)
    };
    match order {
        Order::OldestFirst => Box::new(iter.map(to_date_key)),
        Order::NewestFirst => Box::new(iter.rev().map(to_date_key)),
    }
}

/// Which indexed field a filter is planned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The `sources` index, one range per source asked for.
    Sources,
    /// The `sections` index, one range per section asked for.
    Sections,
    /// No indexed field: the date range itself.
    Dates,
}

/// The plan for `filter`: the indexed field whose labels hold fewer
/// articles in all (by their counters).
pub(crate) fn plan(trees: &Trees, filter: &Filter) -> Result<Plan> {
    let total = |kind: u8, labels: &[String]| -> Result<Option<u64>> {
        if labels.is_empty() {
            return Ok(None);
        }
        let mut sum = 0u64;
        for label in dedup(labels) {
            sum += read_counter(&trees.counts, &keys::label_counter_key(kind, label))?;
        }
        Ok(Some(sum))
    };
    Ok(
        match (
            total(SOURCE_COUNT, &filter.sources)?,
            total(SECTION_COUNT, &filter.sections)?,
        ) {
            (None, None) => Plan::Dates,
            (Some(_), None) => Plan::Sources,
            (None, Some(_)) => Plan::Sections,
            (Some(sources), Some(sections)) if sections < sources => Plan::Sections,
            (Some(_), Some(_)) => Plan::Sources,
        },
    )
}

fn dedup(labels: &[String]) -> Vec<&String> {
    let mut unique: Vec<&String> = labels.iter().collect();
    unique.sort();
    unique.dedup();
    unique
}

/// The date keys of the candidates of a filtered read, in `order`, from
/// the index of `plan` (not [`Plan::Dates`]).
pub(crate) fn candidates(
    trees: &Trees,
    plan: Plan,
    filter: &Filter,
    range: DateRange,
    order: Order,
    after: Option<&Position>,
) -> Result<DateKeys> {
    let (tree, labels) = match plan {
        Plan::Sources => (&trees.sources, &filter.sources),
        Plan::Sections => (&trees.sections, &filter.sections),
        Plan::Dates => unreachable!("a date-range read has no index candidates"),
    };
    let iters = dedup(labels)
        .into_iter()
        .map(|label| label_range(tree, label, range, order, after))
        .collect();
    Ok(Box::new(Merge::new(iters, order)?))
}

/// One entry of a url listing: the `urls` key (the place to resume after)
/// and the article's date key.
pub(crate) struct UrlHit {
    pub key: Vec<u8>,
    pub date_key: Vec<u8>,
}

/// The `urls` entries that `query` matches, in key order, strictly after
/// `after`, at most `budget` entries examined. Returns the hits and the
/// last key examined.
pub(crate) fn url_scan(
    trees: &Trees,
    query: &UrlQuery,
    after: Option<&[u8]>,
    mut wanted: usize,
    budget: usize,
) -> Result<(Vec<UrlHit>, Option<Vec<u8>>, bool)> {
    let mut hits = Vec::new();
    let mut last = None;
    let mut examined = 0;
    for (start, end) in keys::url_scan_ranges(query) {
        let lower = match after {
            Some(after) if after >= start.as_slice() => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(start),
        };
        if matches!(&lower, Bound::Excluded(l) if *l >= end) {
            continue;
        }
        for entry in trees
            .urls
            .range::<Vec<u8>, _>((lower, Bound::Excluded(end)))
        {
            let (key, _) = entry?;
            if wanted == 0 || examined == budget {
                return Ok((hits, last, true));
            }
            examined += 1;
            let (url, date_key) =
                keys::parse_url_index_key(&key).ok_or_else(|| Error::Corrupt {
                    key: format!("{URLS_TREE}/{key:?}"),
                    reason: "not a url-index key".into(),
                })?;
            let date_key = date_key.to_vec();
            last = Some(key.to_vec());
            if query.matches(&url) {
                hits.push(UrlHit {
                    key: key.to_vec(),
                    date_key,
                });
                wanted -= 1;
            }
        }
    }
    Ok((hits, last, false))
}

/// Counts per bucket of `interval` in `range`, unfiltered, from the
/// counters: whole buckets are one counter read each; a bucket the range
/// cuts (a bound inside it) is counted from day counters and, for the
/// part of a day, from the `dates` keys.
pub(crate) fn count_unfiltered(
    trees: &Trees,
    range: DateRange,
    interval: Interval,
) -> Result<BTreeMap<i64, u64>> {
    let kind = interval.counter_kind();
    let lower = range.start.map_or(Bound::Included(vec![kind]), |t| {
        Bound::Included(keys::counter_key(kind, interval.bucket(t)).to_vec())
    });
    let upper = match range.end {
        Some(t) => Bound::Included(
            keys::counter_key(kind, interval.bucket(crate::store::just_before(t))).to_vec(),
        ),
        None => Bound::Excluded(vec![kind + 1]),
    };
    let mut out = BTreeMap::new();
    if matches!((&lower, &upper), (Bound::Included(l), Bound::Included(u)) if l > u) {
        return Ok(out);
    }
    for entry in trees.counts.range::<Vec<u8>, _>((lower, upper)) {
        let (key, value) = entry?;
        let bucket = keys::parse_counter_key(kind, &key).ok_or_else(|| Error::Corrupt {
            key: format!("{COUNTS_TREE}/{key:?}"),
            reason: "not a counter key".into(),
        })?;
        let whole: u64 = value
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt {
                key: format!("{COUNTS_TREE}/{key:?}"),
                reason: "a counter is 8 bytes".into(),
            })?;
        let (from, to) = (interval.start(bucket), interval.start(bucket + 1));
        let cut_from = range.start.filter(|&s| s > from);
        let cut_to = range.end.filter(|&e| e < to);
        let count = if cut_from.is_none() && cut_to.is_none() {
            whole
        } else {
            count_span(trees, cut_from.unwrap_or(from), cut_to.unwrap_or(to))?
        };
        if count > 0 {
            out.insert(bucket, count);
        }
    }
    Ok(out)
}

/// Articles published in `[from, to)`: whole days from the day counters,
/// the rest from the `dates` keys.
fn count_span(trees: &Trees, from: Timestamp, to: Timestamp) -> Result<u64> {
    if from >= to {
        return Ok(0);
    }
    let day = Interval::Day;
    let first_whole = {
        let d = day.bucket(from);
        if day.start(d) == from {
            d
        } else {
            d + 1
        }
    };
    let end_whole = day.bucket(to);
    if first_whole >= end_whole {
        return count_keys(trees, from, to);
    }
    let mut total = count_keys(trees, from, day.start(first_whole))?;
    let kind = day.counter_kind();
    for entry in trees.counts.range(
        keys::counter_key(kind, first_whole).to_vec()..keys::counter_key(kind, end_whole).to_vec(),
    ) {
        let (_, value) = entry?;
        total += value
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(0);
    }
    total += count_keys(trees, day.start(end_whole), to)?;
    Ok(total)
}

/// Entries of `dates` in `[from, to)`.
fn count_keys(trees: &Trees, from: Timestamp, to: Timestamp) -> Result<u64> {
    if from >= to {
        return Ok(0);
    }
    let mut count = 0;
    for entry in trees
        .dates
        .range(keys::timestamp_prefix(from).to_vec()..keys::timestamp_prefix(to).to_vec())
    {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// The date key's time.
pub(crate) fn date_of(date_key: &[u8]) -> Result<(Timestamp, ArticleId)> {
    keys::parse_date_key(date_key).ok_or_else(|| Error::Corrupt {
        key: format!("{date_key:?}"),
        reason: "not a date key".into(),
    })
}

/// What [`check`] expects of the counters, built from `dates`.
#[derive(Default)]
struct Expected {
    counts: BTreeMap<Vec<u8>, u64>,
    sources: u64,
    sections: u64,
    urls: u64,
}

/// Verifies the query indexes against `dates`: every article has its
/// entries, no index has more entries than that (so none is an orphan),
/// and every counter is right. Problems are pushed to `problems`.
pub(crate) fn check(trees: &Trees, codec: &Codec, problems: &mut Vec<String>) -> Result<()> {
    let mut expected = Expected::default();
    for entry in &trees.dates {
        let (key, value) = entry?;
        let Some((published_at, id)) = keys::parse_date_key(&key) else {
            continue; // the date-index check reports it
        };
        let Ok(entry) = DateEntry::decode(codec, published_at, id.clone(), &value) else {
            continue;
        };
        let labels = Labels::of(&entry.article.content);
        let mut changes = QueryChanges::default();
        changes.count(&labels, published_at, 1);
        for (key, delta) in changes.counts {
            *expected.counts.entry(key).or_default() += delta as u64;
        }
        expected.sources += 1;
        expected.sections += 1;
        if !trees
            .sources
            .contains_key(keys::label_key(&labels.source, published_at, &id))?
        {
            problems.push(format!("sources index: no entry for {id}"));
        }
        if !trees
            .sections
            .contains_key(keys::label_key(&labels.section, published_at, &id))?
        {
            problems.push(format!("sections index: no entry for {id}"));
        }
        if let Some(url) = &labels.url {
            expected.urls += 1;
            if !trees
                .urls
                .contains_key(keys::url_index_key(url, published_at, &id))?
            {
                problems.push(format!("urls index: no entry for {id}"));
            }
        }
    }
    for (name, tree, wanted) in [
        (SOURCES_TREE, &trees.sources, expected.sources),
        (SECTIONS_TREE, &trees.sections, expected.sections),
        (URLS_TREE, &trees.urls, expected.urls),
    ] {
        let held = tree.len() as u64;
        if held != wanted {
            problems.push(format!(
                "{name} index: {held} entries for {wanted} articles"
            ));
        }
    }
    let mut stored = BTreeMap::new();
    for entry in &trees.counts {
        let (key, value) = entry?;
        let count = value.as_ref().try_into().map(u64::from_be_bytes);
        stored.insert(key.to_vec(), count.unwrap_or(u64::MAX));
    }
    if stored != expected.counts {
        let wrong = expected
            .counts
            .iter()
            .filter(|(key, count)| stored.get(*key) != Some(count))
            .count()
            + stored
                .keys()
                .filter(|key| !expected.counts.contains_key(*key))
                .count();
        problems.push(format!("counts: {wrong} counters are wrong"));
    }
    Ok(())
}

/// Rebuilds the query indexes from `dates`: adds what is missing, removes
/// what no article holds, rewrites wrong counters. Entries already right
/// are left alone. Sets the `meta` flag once they are complete.
pub(crate) fn rebuild(trees: &Trees, codec: &Codec, report: &mut RepairReport) -> Result<()> {
    trees.meta.remove(QUERY_INDEXES_KEY)?;
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for entry in &trees.dates {
        let (key, value) = entry?;
        let Some((published_at, id)) = keys::parse_date_key(&key) else {
            continue;
        };
        let Ok(entry) = DateEntry::decode(codec, published_at, id.clone(), &value) else {
            continue;
        };
        let labels = Labels::of(&entry.article.content);
        let mut changes = QueryChanges::default();
        changes.count(&labels, published_at, 1);
        for (key, delta) in changes.counts {
            *counts.entry(key).or_default() += delta as u64;
        }
        let mut wanted = vec![
            (
                &trees.sources,
                keys::label_key(&labels.source, published_at, &id),
            ),
            (
                &trees.sections,
                keys::label_key(&labels.section, published_at, &id),
            ),
        ];
        if let Some(url) = &labels.url {
            wanted.push((&trees.urls, keys::url_index_key(url, published_at, &id)));
        }
        for (tree, key) in wanted {
            if !tree.contains_key(&key)? {
                tree.insert(key, &[][..])?;
                report.added += 1;
            }
        }
    }
    // Orphans: an entry whose article is gone, or has other labels now.
    for (tree, which) in [
        (&trees.sources, Which::Source),
        (&trees.sections, Which::Section),
        (&trees.urls, Which::Url),
    ] {
        for entry in tree.iter() {
            let (key, _) = entry?;
            if !held(trees, codec, &key, which)? {
                tree.remove(&key)?;
                report.removed += 1;
            }
        }
    }
    for entry in &trees.counts {
        let (key, _) = entry?;
        if !counts.contains_key(key.as_ref()) {
            trees.counts.remove(&key)?;
            report.removed += 1;
        }
    }
    for (key, count) in counts {
        let value = count.to_be_bytes();
        if trees.counts.get(&key)?.as_deref() != Some(&value[..]) {
            trees.counts.insert(key, &value[..])?;
            report.added += 1;
        }
    }
    trees.db.flush()?;
    trees.meta.insert(QUERY_INDEXES_KEY, &b"1"[..])?;
    trees.db.flush()?;
    Ok(())
}

/// Which query index an entry is in.
#[derive(Debug, Clone, Copy)]
enum Which {
    Source,
    Section,
    Url,
}

/// Whether the article an index entry names holds exactly that entry.
fn held(trees: &Trees, codec: &Codec, key: &[u8], which: Which) -> Result<bool> {
    let date_key = match which {
        Which::Url => keys::parse_url_index_key(key).map(|(_, date)| date),
        Which::Source | Which::Section => keys::split_terminated(key).map(|(_, date)| date),
    };
    let Some((published_at, id)) = date_key.and_then(keys::parse_date_key) else {
        return Ok(false);
    };
    let Some(labels) = stored_labels(trees, codec, &id, published_at)
        .ok()
        .flatten()
    else {
        return Ok(false);
    };
    let wanted = match which {
        Which::Url => labels
            .url
            .map(|url| keys::url_index_key(&url, published_at, &id)),
        Which::Source => Some(keys::label_key(&labels.source, published_at, &id)),
        Which::Section => Some(keys::label_key(&labels.section, published_at, &id)),
    };
    Ok(wanted.as_deref() == Some(key))
}

/// The BASIC article of a date key, if it is (still) there.
pub(crate) fn entry_at(trees: &Trees, codec: &Codec, date_key: &[u8]) -> Result<Option<DateEntry>> {
    let (published_at, id) = date_of(date_key)?;
    let Some(bytes) = trees.dates.get(date_key)? else {
        return Ok(None);
    };
    DateEntry::decode(codec, published_at, id, &bytes)
        .map(Some)
        .map_err(|reason| Error::Corrupt {
            key: format!("dates/{date_key:?}"),
            reason,
        })
}
