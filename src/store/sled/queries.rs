//! The query indexes: labels, urls and counters.
//!
//! The label and url indexes are kept as sorted runs of our own
//! ([`super::runs`]); the counters are a sled tree.
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
//! they are derived from the date index, which is kept in the same runs
//! (tag `D`, the only entries with values), and the writer changes them
//! with it, in its batch's transaction ([`QueryChanges`]). Their values are
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

use super::{
    codec::Codec,
    index::DateEntry,
    runs::{self, Index, RunIndex},
    Trees,
};
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

pub(crate) const COUNTS_TREE: &str = "counts";
/// The sled trees that held the label and url indexes before they moved to
/// sorted runs: dropped once the runs are built.
pub(crate) const SLED_QUERY_TREES: [&str; 3] = ["sources", "sections", "urls"];
/// Set in `meta` by the stores whose query indexes were sled trees.
pub(crate) const SLED_QUERY_INDEXES_KEY: &str = "query_indexes";

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

/// The index entries of an article version with `labels` at `at`.
pub(crate) fn index_keys(labels: &Labels, at: Timestamp, id: &ArticleId) -> Vec<(Index, Vec<u8>)> {
    let mut out = vec![
        (Index::Sources, keys::label_key(&labels.source, at, id)),
        (Index::Sections, keys::label_key(&labels.section, at, id)),
    ];
    if let Some(url) = &labels.url {
        out.push((Index::Urls, keys::url_index_key(url, at, id)));
    }
    out
}

/// The query-index changes of one batch, in the order of its operations
/// (a later change of a key replaces an earlier one).
#[derive(Default)]
pub(crate) struct QueryChanges {
    entries: runs::Changes,
    counts: HashMap<Vec<u8>, i64>,
}

impl QueryChanges {
    /// An article's current version now is `labels` at `at`.
    pub fn add(&mut self, labels: &Labels, at: Timestamp, id: &ArticleId) {
        for (index, key) in index_keys(labels, at, id) {
            self.entries.insert(index.key(&key), Some(Vec::new()));
        }
        self.count(labels, at, 1);
    }

    /// An article's current version no longer is `labels` at `at`.
    pub fn remove(&mut self, labels: &Labels, at: Timestamp, id: &ArticleId) {
        for (index, key) in index_keys(labels, at, id) {
            self.entries.insert(index.key(&key), None);
        }
        self.count(labels, at, -1);
    }

    /// The date entry at `date_key` now is `entry`.
    pub fn put_date(&mut self, date_key: &[u8], entry: Vec<u8>) {
        self.entries.insert(Index::Dates.key(date_key), Some(entry));
    }

    /// There is no date entry at `date_key` any more.
    pub fn remove_date(&mut self, date_key: &[u8]) {
        self.entries.insert(Index::Dates.key(date_key), None);
    }

    /// What the id index holds for `id` now is `state` (encoded).
    pub fn put_id(&mut self, id: &ArticleId, state: Vec<u8>) {
        self.entries
            .insert(Index::Ids.key(id.as_str().as_bytes()), Some(state));
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

    /// The index entries' changes (for [`RunIndex::apply`]) and the batch
    /// for `counts`. The counters are read here, outside the transaction:
    /// the writer is the only one that changes them.
    pub fn into_parts(self, counts: &sled::Tree) -> Result<(runs::Changes, sled::Batch)> {
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
        Ok((self.entries, counters))
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

/// Most days [`holds_at_most`] adds up: a longer range is not a small one.
const SMALL_RANGE_DAYS: i64 = 3;

/// Whether `range` holds at most `limit` articles by the counters of the
/// days it touches (whole days, so an upper bound; read outside any
/// transaction, so a guide, not a promise). `false` for a range open at
/// either end or over more than [`SMALL_RANGE_DAYS`] days.
pub(crate) fn holds_at_most(trees: &Trees, range: DateRange, limit: u64) -> Result<bool> {
    let (Some(start), Some(end)) = (range.start, range.end) else {
        return Ok(false);
    };
    if start >= end {
        return Ok(true);
    }
    let day = Interval::Day;
    let (first, last) = (
        day.bucket(start),
        day.bucket(crate::store::just_before(end)),
    );
    if last - first >= SMALL_RANGE_DAYS {
        return Ok(false);
    }
    let kind = day.counter_kind();
    let (lower, upper) = (
        keys::counter_key(kind, first),
        keys::counter_key(kind, last),
    );
    let mut total = 0u64;
    for entry in trees.counts.range(lower..=upper) {
        let (key, value) = entry?;
        total = total.saturating_add(counter_value(&key, &value)?);
        if total > limit {
            return Ok(false);
        }
    }
    Ok(true)
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

/// The labels of `id`'s current version as the date index holds it.
pub(crate) fn stored_labels(
    trees: &Trees,
    codec: &Codec,
    id: &ArticleId,
    published_at: Timestamp,
) -> Result<Option<Labels>> {
    let key = keys::date_key(published_at, id);
    let Some(bytes) = trees.query.get(Index::Dates, &key)? else {
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
    query: &RunIndex,
    index: Index,
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
    Box::new(
        query
            .range(index, lower, upper, order)
            .map(move |key| key.map(|mut key| key.split_off(skip))),
    )
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
    let (index, labels) = match plan {
        Plan::Sources => (Index::Sources, &filter.sources),
        Plan::Sections => (Index::Sections, &filter.sections),
        Plan::Dates => unreachable!("a date-range read has no index candidates"),
    };
    let iters = dedup(labels)
        .into_iter()
        .map(|label| label_range(&trees.query, index, label, range, order, after))
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
        for key in trees
            .query
            .range(Index::Urls, lower, Bound::Excluded(end), Order::OldestFirst)
        {
            let key = key?;
            if wanted == 0 || examined == budget {
                return Ok((hits, last, true));
            }
            examined += 1;
            let (url, date_key) =
                keys::parse_url_index_key(&key).ok_or_else(|| Error::Corrupt {
                    key: format!("urls/{key:?}"),
                    reason: "not a url-index key".into(),
                })?;
            let date_key = date_key.to_vec();
            last = Some(key.clone());
            if query.matches(&url) {
                hits.push(UrlHit { key, date_key });
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
    for entry in trees.query.range(
        Index::Dates,
        Bound::Included(keys::timestamp_prefix(from).to_vec()),
        Bound::Excluded(keys::timestamp_prefix(to).to_vec()),
        Order::OldestFirst,
    ) {
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

/// An order-independent summary of a set of index keys: how many, and the
/// wrapping sum of a 64-bit hash of each. The check compares what the runs
/// hold with what `dates` calls for this way, in constant memory; damage
/// that leaves both the number and the sum as they were is not a worry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) entries: u64,
    hash_sum: u64,
}

impl Tally {
    fn add(&mut self, key: &[u8]) {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        self.add_hash(hasher.finish());
    }

    /// Adds an entry already hashed.
    pub(crate) fn add_hash(&mut self, hash: u64) {
        self.entries += 1;
        self.hash_sum = self.hash_sum.wrapping_add(hash);
    }
}

/// The slot of a label or url index in per-index arrays (`None` for the
/// date and id indexes, which are checked against the log).
fn slot(index: Index) -> Option<usize> {
    match index {
        Index::Sources => Some(0),
        Index::Sections => Some(1),
        Index::Urls => Some(2),
        Index::Dates | Index::Ids => None,
    }
}

/// The tallies of the label and url indexes.
type LabelTallies = [Tally; 3];

fn tally(tallies: &mut LabelTallies, index: Index, key: &[u8]) {
    if let Some(slot) = slot(index) {
        tallies[slot].add(key);
    }
}

/// Calls `each` with every index entry the articles of `dates` call for
/// (and the article's id); returns the counters they call for.
fn expected(
    trees: &Trees,
    codec: &Codec,
    mut each: impl FnMut(Index, Vec<u8>, &ArticleId),
) -> Result<BTreeMap<Vec<u8>, u64>> {
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for entry in all_dates(trees) {
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
            *counts.entry(key).or_default() += delta as u64;
        }
        for (index, key) in index_keys(&labels, published_at, &id) {
            each(index, key, &id);
        }
    }
    Ok(counts)
}

/// What the runs hold, per label and url index (the date and id indexes
/// are checked against the log, [`super::check`]).
fn held(query: &RunIndex) -> Result<LabelTallies> {
    let mut held = LabelTallies::default();
    for index in Index::LABELS {
        for key in query.range(
            index,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::OldestFirst,
        ) {
            tally(&mut held, index, &key?);
        }
    }
    Ok(held)
}

/// Every date entry (date key, entry), in key order.
pub(crate) fn all_dates(trees: &Trees) -> runs::KeyValues {
    trees.query.range_entries(
        Index::Dates,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::OldestFirst,
    )
}

/// Every id entry (id, encoded [`super::index::IdState`]), in id order.
pub(crate) fn all_ids(trees: &Trees) -> runs::KeyValues {
    trees.query.range_entries(
        Index::Ids,
        Bound::Unbounded,
        Bound::Unbounded,
        Order::OldestFirst,
    )
}

/// A date entry and the label and url entries its article calls for, as
/// the runs hold them (tagged key, value): what a rebuild writes for one
/// article. Just the date entry when it cannot be decoded (the check
/// reports it).
pub(crate) fn run_entries(
    codec: &Codec,
    date_key: Vec<u8>,
    entry: Vec<u8>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(4);
    if let Some((published_at, id)) = keys::parse_date_key(&date_key) {
        if let Ok(decoded) = DateEntry::decode(codec, published_at, id.clone(), &entry) {
            let labels = Labels::of(&decoded.article.content);
            for (index, key) in index_keys(&labels, published_at, &id) {
                out.push((index.key(&key), Vec::new()));
            }
        }
    }
    out.push((Index::Dates.key(&date_key), entry));
    out
}

/// Whether two stored date entries (tagged key, old and new value) say the
/// same, whatever dictionary each was compressed with; label and url
/// entries have no values to differ in.
pub(crate) fn same_entry(codec: &Codec, key: &[u8], old: &[u8], new: &[u8]) -> bool {
    let Some(date_key) = key.strip_prefix(&[Index::Dates as u8]) else {
        return old == new;
    };
    let Some((published_at, id)) = keys::parse_date_key(date_key) else {
        return false;
    };
    let decode = |bytes| DateEntry::decode(codec, published_at, id.clone(), bytes).ok();
    decode(old).is_some_and(|old| Some(old) == decode(new))
}

/// An entry of the whole date or id index, for [`rebuild_from`]: its
/// index, its key there and its value.
pub(crate) type IndexEntry = (Index, Vec<u8>, Vec<u8>);

/// The entries of `index` read from the runs ([`all_dates`], [`all_ids`]),
/// as [`rebuild_from`] takes them.
pub(crate) fn tagged(
    index: Index,
    entries: runs::KeyValues,
) -> impl Iterator<Item = Result<IndexEntry>> {
    entries.map(move |entry| entry.map(|(key, value)| (index, key, value)))
}

/// Writes the runs anew from `entries` (the whole date and id indexes, in
/// any order), with the label and url entries the date entries call for,
/// and counts what changed into `report`; then the counters from them.
pub(crate) fn rebuild_from(
    trees: &Trees,
    codec: &Codec,
    entries: impl Iterator<Item = Result<IndexEntry>>,
    report: &mut RepairReport,
) -> Result<()> {
    let entries = entries.flat_map(|entry| match entry {
        Ok((Index::Dates, key, value)) => run_entries(codec, key, value)
            .into_iter()
            .map(Ok)
            .collect::<Vec<_>>(),
        Ok((index, key, value)) => vec![Ok((index.key(&key), value))],
        Err(e) => vec![Err(e)],
    });
    let rebuilt = trees
        .query
        .rebuild(entries, |key, old, new| same_entry(codec, key, old, new))?;
    report.added += rebuilt.added;
    report.removed += rebuilt.removed;
    rebuild(trees, codec, report)
}

/// At most this many articles are named per index whose entry is missing.
pub(crate) const NAMED_PROBLEMS: usize = 20;
/// Articles whose entry is looked up, per damaged index, to name those
/// missing (a lookup reads a block of every run: at 10M articles, looking
/// up all of them would take longer than the check itself).
pub(crate) const NAMING_PROBES: usize = 100_000;

/// Verifies the query indexes against `dates`: every article has its
/// entries, no index has more entries than that (so none is an orphan),
/// every run file reads back, and every counter is right. Problems are
/// pushed to `problems`.
pub(crate) fn check(trees: &Trees, codec: &Codec, problems: &mut Vec<String>) -> Result<()> {
    let mut wanted = LabelTallies::default();
    let counts = match expected(trees, codec, |index, key, _| {
        tally(&mut wanted, index, &key)
    }) {
        Ok(counts) => counts,
        Err(e) => {
            problems.push(format!("query indexes: {e}"));
            return Ok(());
        }
    };
    match held(&trees.query) {
        Err(e) => problems.push(format!("query indexes: {e}")),
        Ok(held) => {
            for (slot, index) in Index::LABELS.into_iter().enumerate() {
                let (held, wanted) = (held[slot], wanted[slot]);
                if held == wanted {
                    continue;
                }
                // Naming them takes a lookup in every run per article, so
                // only so many are looked up.
                let (mut named, mut probed) = (0, 0);
                expected(trees, codec, |of, key, id| {
                    if of == index && named < NAMED_PROBLEMS && probed < NAMING_PROBES {
                        probed += 1;
                        if !matches!(trees.query.contains(index, &key), Ok(true)) {
                            problems.push(format!("{} index: no entry for {id}", index.name()));
                            named += 1;
                        }
                    }
                })?;
                problems.push(format!(
                    "{} index: {} entries for {} articles{}",
                    index.name(),
                    held.entries,
                    wanted.entries,
                    if held.entries == wanted.entries {
                        ", not the ones they call for"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    let mut stored = BTreeMap::new();
    for entry in &trees.counts {
        let (key, value) = entry?;
        let count = value.as_ref().try_into().map(u64::from_be_bytes);
        stored.insert(key.to_vec(), count.unwrap_or(u64::MAX));
    }
    if stored != counts {
        let wrong = counts
            .iter()
            .filter(|(key, count)| stored.get(*key) != Some(count))
            .count()
            + stored
                .keys()
                .filter(|key| !counts.contains_key(*key))
                .count();
        problems.push(format!("counts: {wrong} counters are wrong"));
    }
    Ok(())
}

/// Rebuilds the query indexes from the date index: the counters first
/// (wrong ones rewritten, stray ones removed), then, unless the runs
/// already hold exactly the label and url entries the articles call for,
/// all runs anew with the date entries as they are ([`RunIndex::rebuild`],
/// whose manifest is the commit point). Drops the sled trees that held
/// these indexes in stores made before they moved to runs.
pub(crate) fn rebuild(trees: &Trees, codec: &Codec, report: &mut RepairReport) -> Result<()> {
    let mut wanted = LabelTallies::default();
    let counts = expected(trees, codec, |index, key, _| {
        tally(&mut wanted, index, &key)
    })?;
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
    let held = if trees.query.is_complete() {
        held(&trees.query).ok()
    } else {
        None
    };
    if held != Some(wanted) {
        let entries =
            tagged(Index::Dates, all_dates(trees)).chain(tagged(Index::Ids, all_ids(trees)));
        return rebuild_from(trees, codec, entries, report);
    }
    let names = trees.db.tree_names();
    for name in SLED_QUERY_TREES {
        if names.iter().any(|t| t.as_ref() == name.as_bytes()) {
            trees.db.drop_tree(name)?;
        }
    }
    trees.meta.remove(SLED_QUERY_INDEXES_KEY)?;
    trees.db.flush()?;
    Ok(())
}

/// Decodes the date entry `bytes` stored at `date_key`.
pub(crate) fn decode_entry(codec: &Codec, date_key: &[u8], bytes: &[u8]) -> Result<DateEntry> {
    let (published_at, id) = date_of(date_key)?;
    DateEntry::decode(codec, published_at, id, bytes).map_err(|reason| Error::Corrupt {
        key: format!("dates/{date_key:?}"),
        reason,
    })
}

/// The BASIC article of a date key, if it is (still) there.
pub(crate) fn entry_at(trees: &Trees, codec: &Codec, date_key: &[u8]) -> Result<Option<DateEntry>> {
    let (published_at, id) = date_of(date_key)?;
    let Some(bytes) = trees.query.get(Index::Dates, date_key)? else {
        return Ok(None);
    };
    DateEntry::decode(codec, published_at, id, &bytes)
        .map(Some)
        .map_err(|reason| Error::Corrupt {
            key: format!("dates/{date_key:?}"),
            reason,
        })
}
