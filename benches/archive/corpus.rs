//! The benchmark's articles: a generated corpus of distinct bodies that
//! compress like real news.
//!
//! Article number `i` is always the same article, built on the fly from a
//! random stream seeded by `i`, so a run of a million articles never holds
//! the corpus in memory and nothing is read from outside the repository. No
//! real text is copied: the English words below were typed for this file,
//! and everything else is made of syllables.
//!
//! The text model, from the bottom up:
//! - a lexicon built once per process from a fixed seed: a few hundred typed
//!   English function and common words, and a large synthetic vocabulary of
//!   pseudo-words made of syllables, as nouns, verbs, adjectives and adverbs.
//!   Each list is drawn with a Zipf-like rank/frequency law, typed words at
//!   the top ranks and shorter pseudo-words before longer ones, as in
//!   English;
//! - per article, a cast: people, places and organisations named from
//!   syllables (some with accented letters), mixed with recurring ones from
//!   global pools, and a handful of topic words that recur through the
//!   article. That burstiness is what lets one article compress on its own
//!   while the corpus as a whole does not repeat;
//! - a small grammar: noun and verb phrases, clauses, and sentence shapes
//!   (plain, compound, quoted speech in curly quotes, reported speech,
//!   figures with currencies and percentages, openers, asides), in
//!   paragraphs of one to four sentences.
//!
//! `calibration.rs` measures how the result compresses at the start of
//! every run; the constants marked "tuned" were set against it.

use std::sync::OnceLock;

use article_archive::proto;

/// Zipf exponent and offset of the open word classes. Tuned: a lower
/// exponent spreads the vocabulary (text compresses less), a higher one
/// concentrates it; the offset flattens the head.
const WORD_EXPONENT: f64 = 1.1;
const WORD_OFFSET: f64 = 3.0;
/// Pseudo-words per open class (nouns, verbs, adjectives, adverbs). Tuned
/// with the exponent.
const SYNTHETIC_NOUNS: usize = 24_000;
const SYNTHETIC_VERBS: usize = 6_000;
const SYNTHETIC_ADJECTIVES: usize = 8_000;
const SYNTHETIC_ADVERBS: usize = 1_500;
/// Percent of noun and adjective slots filled from the article's own topic
/// words. Tuned: this is what one article repeats within itself.
const TOPIC_PERCENT: usize = 26;

/// Sizes of the global pools, chosen to look like a large news archive.
pub const SOURCES: usize = 200;
pub const AUTHORS: usize = 6_000;
pub const TAGS: usize = 400;
const FAMOUS_PLACES: usize = 600;
const FAMOUS_ORGANISATIONS: usize = 400;
const FAMOUS_PEOPLE: usize = 1_000;

/// Body lengths in bytes: a target drawn in this range, skewed towards the
/// short end, then the sentence that crosses it is finished.
const BODY_MIN: usize = 3_000;
const BODY_TARGET_MAX: usize = 8_600;

/// Seconds since 1970 of midnight UTC on a civil date (proleptic
/// Gregorian; Howard Hinnant's `days_from_civil`).
const fn midnight(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

/// The archive's date spread: a thin tail back to 1851 so pre-1970 dates
/// (negative timestamps) still occur, most articles since 2000.
const FIRST_DATE: i64 = midnight(1851, 1, 1);
const Y1970: i64 = 0;
pub const Y2000: i64 = midnight(2000, 1, 1);
const LAST_DATE: i64 = midnight(2026, 7, 1);

/// Year, month and day of a time in seconds since 1970 (the inverse of
/// `midnight`), for the dates in urls.
fn civil(seconds: i64) -> (i64, i64, i64) {
    let z = seconds.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// splitmix64: spreads article numbers and seeds over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// wyrand: one multiply per draw, so a million articles of a thousand words
/// each stay cheap to generate.
struct Rng {
    state: u64,
    /// Bits of one draw, seven per `percent` choice: the grammar makes
    /// several such choices per word.
    coins: u64,
    coins_left: u32,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self {
            state: mix(seed),
            coins: 0,
            coins_left: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xE703_7ED1_A0B4_28DB);
        (t >> 64) as u64 ^ t as u64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in `range`.
    fn between(&mut self, range: std::ops::RangeInclusive<usize>) -> usize {
        range.start() + self.below(range.end() - range.start() + 1)
    }

    /// True `percent` times in a hundred (to within 1/128).
    fn percent(&mut self, percent: usize) -> bool {
        if self.coins_left < 7 {
            self.coins = self.next();
            self.coins_left = 63;
        }
        let coin = (self.coins & 127) as usize;
        self.coins >>= 7;
        self.coins_left -= 7;
        coin * 100 < percent * 128
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One of `items`, uniformly.
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// Ranks `0..n` drawn with probability proportional to
/// `1/(rank+1+offset)^exponent` (Zipf-Mandelbrot: the offset flattens the
/// head, so the commonest noun is not a tenth of all nouns). A table of the
/// rank found at each quantile makes a draw one lookup; where a quantile
/// bucket spans several ranks (the long tail, whose probabilities are nearly
/// equal) one of them is drawn uniformly.
struct Zipf {
    quantile_rank: Vec<u32>,
    bits: u32,
}

impl Zipf {
    fn new(n: usize, exponent: f64, offset: f64) -> Self {
        // Enough quantiles to resolve the head ranks, few enough to stay in
        // cache.
        let bits = (usize::BITS - n.leading_zeros() + 6).min(12);
        let quantiles = 1usize << bits;
        let weights: Vec<f64> = (0..n)
            .map(|rank| (rank as f64 + 1.0 + offset).powf(-exponent))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut quantile_rank = Vec::with_capacity(quantiles + 1);
        let (mut rank, mut below_rank) = (0, 0.0);
        for q in 0..=quantiles {
            let target = q as f64 / quantiles as f64 * total;
            while rank + 1 < n && below_rank + weights[rank] <= target {
                below_rank += weights[rank];
                rank += 1;
            }
            quantile_rank.push(rank as u32);
        }
        Self {
            quantile_rank,
            bits,
        }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.next();
        let q = (x >> (64 - self.bits)) as usize;
        let lo = self.quantile_rank[q] as usize;
        let hi = self.quantile_rank[q + 1] as usize;
        // Without a branch: where lo == hi this adds nothing.
        lo + ((u128::from(x << self.bits) * (hi - lo + 1) as u128) >> 64) as usize
    }
}

/// One word class: typed words first, then pseudo-words, drawn by rank.
///
/// Each word sits in a 16-byte slot of one string: the word, padding, and
/// its length as the slot's last byte (an ASCII letter, so the string stays
/// UTF-8). Drawing a word then touches one cache line, which matters when a
/// million articles of a thousand words are generated.
struct WordList {
    slots: String,
    typed: usize,
    zipf: Zipf,
}

const SLOT: usize = 16;

impl WordList {
    fn new(typed: &[&str], synthetic: &[String], exponent: f64, offset: f64) -> Self {
        let mut slots = String::new();
        let mut count = 0;
        for word in typed
            .iter()
            .copied()
            .chain(synthetic.iter().map(String::as_str))
        {
            assert!(word.len() < SLOT, "{word:?} is longer than a slot");
            slots.push_str(word);
            slots.extend(std::iter::repeat_n(' ', SLOT - 1 - word.len()));
            slots.push((b'a' + word.len() as u8) as char);
            count += 1;
        }
        Self {
            slots,
            typed: typed.len(),
            zipf: Zipf::new(count, exponent, offset),
        }
    }

    /// A closed class of typed words only.
    fn typed(words: &[&str]) -> Self {
        Self::new(words, &[], 1.0, 0.0)
    }

    fn len(&self) -> usize {
        self.slots.len() / SLOT
    }

    /// The slot of a word, and the word's length.
    fn slot(&self, rank: usize) -> (&[u8; SLOT], usize) {
        let start = rank * SLOT;
        let slot: &[u8; SLOT] = self.slots.as_bytes()[start..start + SLOT]
            .try_into()
            .unwrap();
        (slot, usize::from(slot[SLOT - 1] - b'a'))
    }

    /// A word, and whether it is a pseudo-word (which takes inflections;
    /// typed words come inflected).
    fn draw(&self, rng: &mut Rng) -> ((&[u8; SLOT], usize), bool) {
        let rank = self.zipf.sample(rng);
        (self.slot(rank), rank >= self.typed)
    }
}

/// Names drawn by rank: famous places, organisations, people, sources,
/// authors and tags recur across articles like real ones do.
struct NameList {
    names: Vec<String>,
    zipf: Zipf,
}

impl NameList {
    fn new(names: Vec<String>, exponent: f64) -> Self {
        let zipf = Zipf::new(names.len(), exponent, 0.0);
        Self { names, zipf }
    }

    fn draw(&self, rng: &mut Rng) -> &str {
        &self.names[self.zipf.sample(rng)]
    }

    fn draw_rank(&self, rng: &mut Rng) -> usize {
        self.zipf.sample(rng)
    }
}

// The typed English words. Each list is in rough order of frequency in news
// writing, because the rank decides how often a word is drawn.

const DETERMINERS: &[&str] = &[
    "the", "a", "the", "its", "their", "this", "his", "her", "an", "some", "all", "that", "our",
    "these", "many", "several", "no", "every", "each", "those", "another", "both", "other", "more",
    "most", "such", "any", "few", "two", "three", "much", "whose", "which", "either",
];

#[rustfmt::skip]
const PREPOSITIONS: &[&str] = &[
    "of", "in", "to", "for", "on", "with", "at", "by", "from", "about", "after", "over", "into",
    "against", "during", "under", "before", "between", "without", "through", "across", "since",
    "near", "despite", "among", "around", "behind", "towards", "within", "beyond", "along",
    "until", "amid", "via", "like", "upon", "above", "below", "outside", "inside", "off",
    "throughout", "alongside", "beneath", "except",
];

const PRONOUNS: &[&str] = &[
    "it", "he", "they", "she", "we", "I", "you", "there", "this", "that", "one", "nobody",
    "everyone", "someone",
];

#[rustfmt::skip]
const AUXILIARIES: &[&str] = &[
    "has", "had", "will", "would", "was", "is", "could", "have", "were", "may", "can", "should",
    "might", "must", "did", "has been", "had been", "will be", "would be", "is being",
    "could have", "might have", "did not", "does not", "has not", "would not", "will not",
    "could not", "cannot", "doesn’t", "didn’t", "won’t", "wouldn’t", "isn’t", "wasn’t", "hasn’t",
    "can’t", "couldn’t", "shouldn’t", "is expected to", "was due to", "is set to", "was about to",
    "appears to", "is likely to",
];

#[rustfmt::skip]
const CONJUNCTIONS: &[&str] = &[
    "and", "but", "while", "as", "because", "although", "so", "after", "before", "when", "if",
    "though", "or", "since", "until", "whereas", "yet", "and then", "even as", "even though",
    "unless", "once", "so that",
];

#[rustfmt::skip]
const NOUNS: &[&str] = &[
    "government", "year", "people", "time", "minister", "police", "city", "country", "week", "day",
    "state", "company", "plan", "world", "report", "case", "party", "council", "group", "public",
    "market", "money", "family", "water", "school", "home", "law", "court", "health", "service",
    "president", "election", "vote", "change", "team", "season", "game", "match", "player", "club",
    "month", "price", "cost", "business", "office", "official", "region", "area", "town",
    "village", "street", "road", "border", "war", "peace", "deal", "talks", "budget", "tax",
    "rate", "bank", "economy", "energy", "oil", "gas", "power", "climate", "weather", "storm",
    "fire", "flood", "hospital", "doctor", "patient", "child", "children", "woman", "man", "women",
    "men", "student", "teacher", "university", "study", "research", "data", "system", "project",
    "policy", "decision", "statement", "question", "issue", "problem", "crisis", "attack",
    "investigation", "trial", "judge", "jury", "prison", "officer", "army", "troops", "force",
    "security", "community", "support", "workers", "union", "strike", "job", "jobs", "industry",
    "trade", "shares", "profit", "loss", "growth", "inflation", "housing", "house", "parliament",
    "committee", "board", "chief", "leader", "members", "campaign", "reform", "agreement",
    "sector", "land", "farm", "food", "air", "site", "network", "phone", "internet", "technology",
    "software", "film", "music", "book", "show", "art", "museum", "festival", "victory", "defeat",
    "goal", "record", "history", "future", "evidence", "information", "number", "figures", "life",
    "death", "night", "morning", "evening", "weekend", "side", "part", "end", "point", "way",
    "place", "hand", "head", "word", "story", "news", "media", "voters", "residents", "visitors",
    "fans", "authorities", "officials", "experts", "critics", "lawmakers", "investors", "analysts",
    "scientists", "researchers", "spokesperson", "chairman", "director", "lawyer", "neighbours",
    "rules", "funding", "contract", "vaccine", "virus", "drought", "harvest", "coast", "river",
    "bridge", "railway", "airport", "port", "factory", "mine", "shop", "church", "stadium",
    "station", "hearing", "inquiry", "scandal", "protest", "crowd", "ceremony", "anniversary",
    "schedule", "warning", "threat", "risk", "benefit", "pension", "debt", "loan", "fund", "bill",
    "motion", "treaty",
];

#[rustfmt::skip]
const VERBS: &[&str] = &[
    "said", "told", "says", "announced", "added", "made", "took", "found", "called", "became",
    "came", "went", "gave", "showed", "expected", "began", "reported", "wrote", "claimed",
    "warned", "agreed", "decided", "confirmed", "denied", "described", "raised", "cut", "left",
    "won", "lost", "held", "met", "paid", "built", "bought", "sold", "launched", "opened",
    "closed", "signed", "rejected", "approved", "increased", "fell", "rose", "dropped", "hit",
    "killed", "arrested", "charged", "accused", "faced", "passed", "moved", "sent", "received",
    "asked", "tried", "used", "helped", "needed", "wanted", "planned", "argued", "suggested",
    "believed", "remained", "continued", "returned", "ended", "started", "joined", "led",
    "brought", "set", "put", "kept", "ran", "saw", "knew", "thought", "looked", "turned", "worked",
    "played", "lived", "died", "spent", "allowed", "offered", "included", "produced", "reached",
    "released", "published", "urged", "pledged", "vowed", "criticised", "welcomed", "praised",
    "blamed", "insisted", "revealed", "estimated", "predicted", "admitted", "suspended",
    "resigned", "elected", "appointed", "cancelled", "delayed", "invested", "reduced", "doubled",
    "threatened", "make", "take", "give", "say", "go", "see", "know", "get", "find", "help",
    "keep", "become", "show", "hold", "bring", "meet", "pay", "include", "continue", "allow",
    "lead", "consider", "expect", "build", "remain", "face", "spend", "win", "offer", "reach",
    "raise", "support", "provide", "need", "want", "try", "ask", "work", "call", "plan", "use",
    "add", "review", "investigate", "restore", "protect", "replace",
];

#[rustfmt::skip]
const ADJECTIVES: &[&str] = &[
    "new", "last", "first", "other", "local", "national", "public", "former", "political",
    "British", "American", "European", "international", "federal", "major", "big", "small",
    "large", "high", "low", "long", "young", "old", "good", "bad", "best", "little", "great",
    "important", "early", "late", "next", "previous", "recent", "final", "key", "main", "senior",
    "general", "economic", "social", "financial", "military", "foreign", "domestic", "private",
    "free", "full", "hard", "clear", "likely", "possible", "strong", "real", "serious",
    "significant", "current", "annual", "global", "regional", "rural", "urban", "legal",
    "official", "medical", "environmental", "digital", "historic", "top", "only", "same", "second",
    "third", "whole", "open", "human", "critical", "difficult", "huge", "short", "special",
    "single", "common", "independent", "northern", "southern", "eastern", "western", "central",
    "popular", "controversial", "unprecedented", "fresh", "further", "wider", "higher", "lower",
    "emergency", "temporary", "permanent", "elderly", "vulnerable",
];

#[rustfmt::skip]
const ADVERBS: &[&str] = &[
    "also", "not", "now", "still", "only", "just", "already", "even", "again", "then", "later",
    "never", "almost", "recently", "currently", "previously", "finally", "quickly", "largely",
    "nearly", "particularly", "really", "clearly", "often", "probably", "perhaps", "widely",
    "sharply", "publicly", "formally", "immediately", "eventually", "initially", "reportedly",
    "allegedly", "officially", "significantly", "slightly", "simply", "directly", "strongly",
];

#[rustfmt::skip]
const OPENERS: &[&str] = &[
    "However", "Meanwhile", "At the time", "In a statement", "For now", "Instead", "Even so",
    "In the meantime", "As a result", "By then", "Until now", "In recent years", "At first",
    "For years", "Since then", "In response", "On the other hand", "In the end", "Last year",
    "Earlier this month", "Later that day", "This week", "Overnight",
];

#[rustfmt::skip]
const ROLES: &[&str] = &[
    "a spokesperson for", "the chief executive of", "the director of", "a senior official at",
    "the head of", "a professor at", "a member of", "the chair of", "a lawyer for",
    "an analyst at", "the founder of", "a researcher at", "the leader of", "a former adviser to",
    "the president of", "a manager at", "a campaigner with", "the treasurer of",
    "a board member of", "the press officer for",
];

#[rustfmt::skip]
const SAYING: &[&str] = &[
    "said", "said", "said", "told reporters", "added", "says", "explained", "noted", "warned",
    "insisted", "wrote", "argued", "recalled", "admitted", "told the paper",
];

#[rustfmt::skip]
const STOCK: &[&str] = &[
    "declined to comment", "did not respond to a request for comment",
    "could not be reached for comment", "said an investigation was under way",
    "said it would review the decision", "did not give further details",
];

#[rustfmt::skip]
const WEEKDAYS: &[&str] = &[
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
];

#[rustfmt::skip]
const MONTHS: &[&str] = &[
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
];

const PERIODS: &[&str] = &[
    "week", "month", "year", "decade", "day", "quarter", "season",
];

#[rustfmt::skip]
const UNITS: &[&str] = &[
    "people", "homes", "jobs", "votes", "cases", "miles", "kilometres", "tonnes", "hectares",
    "pupils", "patients", "passengers", "visitors", "members", "flights", "vehicles", "barrels",
    "acres", "seats", "signatures",
];

const CURRENCIES: &[&str] = &["$", "£", "€", "$", "£"];
const MAGNITUDES: &[&str] = &["m", "bn", "", "m", "k", " million", " billion"];

#[rustfmt::skip]
const SECTIONS: &[&str] = &[
    "World", "Politics", "Business", "Sport", "Opinion", "Science", "Technology", "Culture",
    "Health", "Local", "Environment", "Education", "Money", "Law", "Travel", "Lifestyle", "Media",
    "Obituaries", "Books", "Music", "Film", "Food", "Weather", "Motoring",
];

#[rustfmt::skip]
const TOPICS: &[&str] = &[
    "politics", "economy", "elections", "climate change", "football", "crime", "health",
    "education", "housing", "technology", "immigration", "energy", "transport", "tax", "inflation",
    "courts", "police", "war", "diplomacy", "trade", "jobs", "markets", "banking", "science",
    "space", "art", "music", "film", "books", "weather", "floods", "wildfires", "agriculture",
    "religion", "media", "monarchy", "tennis", "cricket", "rugby", "olympics", "universities",
    "schools", "hospitals", "pensions", "local government", "human rights", "terrorism",
    "cybersecurity", "artificial intelligence", "social media", "obituaries", "property", "retail",
    "aviation", "shipping", "fishing", "mining", "wildlife", "theatre",
];

#[rustfmt::skip]
const ORGANISATION_KINDS: &[&str] = &[
    "Council", "Group", "Holdings", "Party", "University", "Bank", "Institute", "Foundation",
    "Agency", "Association", "Corporation", "Trust", "Commission", "Authority", "Union", "Society",
    "Partners", "Energy", "Airlines", "Motors", "Press", "Hospital", "College", "Federation",
    "Alliance",
];

const PLACE_ENDINGS: &[&str] = &[
    "", "", "", "ton", "ville", "burg", "ford", "field", "port", "mouth", "stad", "ia", "land",
    "ham", "wick", "dale", "abad", "grad", "polis", "town",
];

#[rustfmt::skip]
const HOST_WORDS: &[&str] = &[
    "", "news", "times", "post", "herald", "daily", "tribune", "gazette", "chronicle", "observer",
    "journal", "express", "record", "star", "wire", "courier", "echo", "mail", "sentinel",
    "standard", "today", "weekly", "review", "press",
];

const TOP_LEVEL_DOMAINS: &[&str] = &[
    "com", "com", "com", "co.uk", "org", "net", "com.au", "ca", "ie", "co.nz", "co.za", "in",
    "news",
];

const TITLES: &[&str] = &["Mr", "Ms", "Dr", "Prof", "Mrs", "Sir", "Judge", "Senator"];

// Syllables. Names use all of them; pseudo-words draw plain ones more often
// (the repeats weight the draw), so they read like words, not like names.
const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
    "cr", "dr", "fr", "gr", "pr", "tr", "bl", "cl", "fl", "gl", "pl", "sl", "sc", "sk", "sm", "sn",
    "sp", "st", "sw", "ch", "sh", "th", "wh", "qu", "str", "spr", "", "", "",
];
const NUCLEI: &[&str] = &[
    "a", "e", "i", "o", "u", "a", "e", "i", "o", "ea", "ai", "ou", "oo", "ee", "ie", "oa", "au",
    "y",
];
const CODAS: &[&str] = &[
    "", "", "", "", "n", "r", "s", "t", "l", "m", "d", "nd", "nt", "st", "rd", "ck", "ng", "rn",
    "ll", "ss", "x", "th", "ct", "mp", "rk", "lt", "sk", "ft", "ps",
];
const PLAIN_ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "b", "c", "d", "f",
    "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "br", "cr", "dr", "pr", "tr", "pl", "st",
    "ch", "sh", "th", "", "", "", "", "",
];
const PLAIN_NUCLEI: &[&str] = &[
    "a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "e", "i", "o", "u", "ea", "ai", "ou", "ee",
    "oo",
];
const PLAIN_CODAS: &[&str] = &[
    "", "", "", "", "", "", "", "", "n", "r", "s", "t", "l", "m", "n", "r", "nd", "nt", "st", "ck",
    "ng", "ss",
];
/// Letters that make some names non-ASCII, as in any international archive.
const ACCENTED_NUCLEI: &[&str] = &[
    "é", "è", "ö", "ü", "á", "í", "ó", "ø", "å", "ã", "ë", "ï", "ô", "ú", "ā",
];
const ACCENTED_ONSETS: &[&str] = &["ł", "ž", "š", "č", "ñ", "ç", "ś", "ř", "dž", "ğ"];

const NOUN_ENDINGS: &[&str] = &[
    "", "", "", "", "er", "ment", "tion", "ness", "ity", "ance", "ist", "ism", "age", "ure",
    "ship", "ery", "ant", "or",
];
const ADJECTIVE_ENDINGS: &[&str] = &[
    "al", "ic", "ous", "ive", "ful", "less", "able", "ish", "ent", "ary", "ian", "y", "",
];

fn syllable(rng: &mut Rng, out: &mut String, accents: bool) {
    if accents && rng.percent(6) {
        out.push_str(rng.pick(ACCENTED_ONSETS));
    } else {
        out.push_str(rng.pick(ONSETS));
    }
    if accents && rng.percent(12) {
        out.push_str(rng.pick(ACCENTED_NUCLEI));
    } else {
        out.push_str(rng.pick(NUCLEI));
    }
    out.push_str(rng.pick(CODAS));
}

/// A pseudo-word of at most `max` bytes.
fn pseudo_word(rng: &mut Rng, syllables: usize, ending: &str, max: usize) -> String {
    loop {
        let mut word = String::with_capacity(16);
        for _ in 0..syllables {
            word.push_str(rng.pick(PLAIN_ONSETS));
            word.push_str(rng.pick(PLAIN_NUCLEI));
            word.push_str(rng.pick(PLAIN_CODAS));
        }
        word.push_str(ending);
        if word.len() <= max {
            return word;
        }
    }
}

/// Pseudo-words of one class: frequent ranks get fewer syllables.
fn pseudo_words(seed: u64, count: usize, endings: &[&str]) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|rank| {
            let syllables = 1 + rng.below(2) + usize::from(rank > 2_000 && rng.percent(50));
            let ending = if endings.is_empty() {
                ""
            } else {
                rng.pick(endings)
            };
            // Room for "ly" after an adjective.
            pseudo_word(&mut rng, syllables, ending, SLOT - 3)
        })
        .collect()
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A capitalised name of up to `max_syllables` syllables and at least three
/// letters, sometimes with accented letters.
fn name(rng: &mut Rng, max_syllables: usize) -> String {
    let accents = rng.percent(10);
    let mut lower = String::with_capacity(16);
    while lower.chars().count() < 3 {
        lower.clear();
        for _ in 0..rng.between(1..=max_syllables) {
            syllable(rng, &mut lower, accents);
        }
    }
    capitalise(&lower)
}

fn person_name(rng: &mut Rng) -> String {
    let first = name(rng, 2);
    let last = name(rng, 3);
    if rng.percent(8) {
        let initial = name(rng, 1);
        let initial = initial.chars().next().unwrap_or('A');
        format!("{first} {initial}. {last}")
    } else {
        format!("{first} {last}")
    }
}

fn place_name(rng: &mut Rng) -> String {
    let base = name(rng, 2);
    match rng.below(12) {
        0 => format!("New {base}"),
        1 => format!("Port {base}"),
        2 => format!("{base} City"),
        3 => format!("San {base}"),
        4 => format!("{base} Bay"),
        _ => format!("{base}{}", rng.pick(PLACE_ENDINGS)),
    }
}

fn organisation_name(rng: &mut Rng, place: &str) -> String {
    let kind = rng.pick(ORGANISATION_KINDS);
    match rng.below(8) {
        0 => (0..rng.between(3..=4))
            .map(|_| (b'A' + rng.below(26) as u8) as char)
            .collect(),
        1 => format!("the {place} {kind}"),
        2 => format!(
            "the Ministry of {}",
            capitalise(&pseudo_word(rng, 2, "ment", 16))
        ),
        3 => format!("{} & {} {kind}", name(rng, 2), name(rng, 2)),
        _ => format!("{} {kind}", name(rng, 3)),
    }
}

/// Everything shared by all articles, built once from fixed seeds.
struct Lexicon {
    determiners: WordList,
    prepositions: WordList,
    pronouns: WordList,
    auxiliaries: WordList,
    conjunctions: WordList,
    nouns: WordList,
    verbs: WordList,
    adjectives: WordList,
    adverbs: WordList,
    places: NameList,
    organisations: NameList,
    people: NameList,
    sources: NameList,
    authors: NameList,
    tags: NameList,
    sections: NameList,
}

fn lexicon() -> &'static Lexicon {
    static LEXICON: OnceLock<Lexicon> = OnceLock::new();
    LEXICON.get_or_init(|| {
        let mut rng = Rng::new(0x5EED);
        let places: Vec<String> = (0..FAMOUS_PLACES).map(|_| place_name(&mut rng)).collect();
        let organisations: Vec<String> = (0..FAMOUS_ORGANISATIONS)
            .map(|_| {
                let place = places[rng.below(places.len())].clone();
                organisation_name(&mut rng, &place)
            })
            .collect();
        let people: Vec<String> = (0..FAMOUS_PEOPLE).map(|_| person_name(&mut rng)).collect();
        let mut sources: Vec<String> = Vec::with_capacity(SOURCES);
        while sources.len() < SOURCES {
            let mut host = name(&mut rng, 2).to_lowercase();
            host.retain(|c| c.is_ascii_alphanumeric());
            let prefix = if rng.percent(40) { "www." } else { "" };
            let the = if rng.percent(20) { "the" } else { "" };
            let word = rng.pick(HOST_WORDS);
            let tld = rng.pick(TOP_LEVEL_DOMAINS);
            let source = format!("{prefix}{the}{host}{word}.{tld}");
            if host.len() > 2 && !sources.contains(&source) {
                sources.push(source);
            }
        }
        let authors: Vec<String> = (0..AUTHORS).map(|_| person_name(&mut rng)).collect();
        let nouns = pseudo_words(0xA0, SYNTHETIC_NOUNS, NOUN_ENDINGS);
        // The most used tags are the typed topics, the rest name places,
        // organisations and things.
        let tags: Vec<String> = (0..TAGS)
            .map(|t| match t % 4 {
                _ if t < TOPICS.len() => TOPICS[t].to_string(),
                0 => format!("{} {}", places[t].to_lowercase(), rng.pick(TOPICS)),
                1 => places[t].clone(),
                2 => organisations[t].trim_start_matches("the ").to_string(),
                _ => nouns[t].clone(),
            })
            .collect();
        Lexicon {
            determiners: WordList::typed(DETERMINERS),
            prepositions: WordList::typed(PREPOSITIONS),
            pronouns: WordList::typed(PRONOUNS),
            auxiliaries: WordList::typed(AUXILIARIES),
            conjunctions: WordList::typed(CONJUNCTIONS),
            nouns: WordList::new(NOUNS, &nouns, WORD_EXPONENT, WORD_OFFSET),
            verbs: WordList::new(
                VERBS,
                &pseudo_words(0xB0, SYNTHETIC_VERBS, &[]),
                WORD_EXPONENT,
                WORD_OFFSET,
            ),
            adjectives: WordList::new(
                ADJECTIVES,
                &pseudo_words(0xC0, SYNTHETIC_ADJECTIVES, ADJECTIVE_ENDINGS),
                WORD_EXPONENT,
                WORD_OFFSET,
            ),
            adverbs: WordList::new(
                ADVERBS,
                &pseudo_words(0xD0, SYNTHETIC_ADVERBS, ADJECTIVE_ENDINGS)
                    .into_iter()
                    .map(|w| w + "ly")
                    .collect::<Vec<_>>(),
                WORD_EXPONENT,
                WORD_OFFSET,
            ),
            places: NameList::new(places, 1.0),
            organisations: NameList::new(organisations, 1.0),
            people: NameList::new(people, 1.0),
            sources: NameList::new(sources, 0.9),
            authors: NameList::new(authors, 0.5),
            tags: NameList::new(tags, 0.9),
            sections: NameList::new(SECTIONS.iter().map(|s| s.to_string()).collect(), 0.8),
        }
    })
}

/// Someone the article quotes: the full name at first mention, then the
/// short form.
struct Person {
    full: String,
    short: String,
    mentioned: bool,
}

/// The people, places, organisations and topic words of one article.
struct Cast {
    people: Vec<Person>,
    places: Vec<String>,
    organisations: Vec<String>,
    topic_nouns: Vec<(&'static [u8; SLOT], usize)>,
    topic_adjectives: Vec<(&'static [u8; SLOT], usize)>,
}

impl Cast {
    fn new(rng: &mut Rng, lexicon: &'static Lexicon) -> Self {
        let places: Vec<String> = (0..rng.between(1..=3))
            .map(|_| {
                if rng.percent(50) {
                    lexicon.places.draw(rng).to_string()
                } else {
                    place_name(rng)
                }
            })
            .collect();
        let organisations = (0..rng.between(1..=3))
            .map(|_| {
                if rng.percent(40) {
                    lexicon.organisations.draw(rng).to_string()
                } else {
                    let place = places[rng.below(places.len())].clone();
                    organisation_name(rng, &place)
                }
            })
            .collect();
        let people = (0..rng.between(2..=6))
            .map(|_| {
                let full = if rng.percent(25) {
                    lexicon.people.draw(rng).to_string()
                } else {
                    person_name(rng)
                };
                let surname = full.rsplit(' ').next().unwrap_or(&full);
                let short = if rng.percent(50) {
                    format!("{} {surname}", rng.pick(TITLES))
                } else {
                    surname.to_string()
                };
                Person {
                    full,
                    short,
                    mentioned: false,
                }
            })
            .collect();
        // Topic words come from the middle ranks: specific enough to be the
        // subject of one article, common enough to recur across articles.
        let mid_rank = |rng: &mut Rng, list: &'static WordList| {
            list.slot(rng.between(list.typed / 2..=(list.len() / 3)))
        };
        let topic_nouns = (0..rng.between(5..=10))
            .map(|_| mid_rank(rng, &lexicon.nouns))
            .collect();
        let topic_adjectives = (0..rng.between(2..=4))
            .map(|_| mid_rank(rng, &lexicon.adjectives))
            .collect();
        Self {
            people,
            places,
            organisations,
            topic_nouns,
            topic_adjectives,
        }
    }
}

/// Writes the text of one article, token by token.
struct Writer {
    /// Bytes, not a String, so words can be copied slot-wise; every piece
    /// written is UTF-8.
    text: Vec<u8>,
    rng: Rng,
    lexicon: &'static Lexicon,
    cast: Cast,
    /// The next word starts a sentence.
    capital: bool,
    /// No space before the next word (after an opening quote or a line).
    glued: bool,
}

impl Writer {
    fn space(&mut self) {
        if self.glued {
            self.glued = false;
        } else {
            self.text.push(b' ');
        }
    }

    /// Punctuation: no space before it.
    fn mark(&mut self, mark: &str) {
        self.text.extend_from_slice(mark.as_bytes());
    }

    /// Puts text that may start a sentence, capitalising its first letter
    /// if so ("the X Council", "on Monday").
    fn put(&mut self, text: &str) {
        self.space();
        let at = self.text.len();
        self.text.extend_from_slice(text.as_bytes());
        self.capitalise(at);
    }

    /// Puts a word from a slot: the whole slot is copied (one fixed-size
    /// move, cheaper than a copy of variable length) and the padding cut.
    fn put_slot(&mut self, (slot, len): (&[u8; SLOT], usize)) {
        self.space();
        let at = self.text.len();
        self.text.extend_from_slice(slot);
        self.text.truncate(at + len);
        self.capitalise(at);
    }

    fn capitalise(&mut self, at: usize) {
        if self.capital {
            // Only an ASCII lower-case letter changes, so UTF-8 stays valid.
            self.text[at] = self.text[at].to_ascii_uppercase();
            self.capital = false;
        }
    }

    /// Puts one of `items`, drawn uniformly.
    fn put_any(&mut self, items: &[&str]) {
        let item = items[self.rng.below(items.len())];
        self.put(item);
    }

    fn put_drawn(&mut self, list: fn(&Lexicon) -> &WordList) -> bool {
        let (word, synthetic) = list(self.lexicon).draw(&mut self.rng);
        self.put_slot(word);
        synthetic
    }

    fn end_sentence(&mut self) {
        self.text.push(b'.');
        self.capital = true;
    }

    fn noun(&mut self) {
        if self.rng.percent(TOPIC_PERCENT) {
            let word = self.cast.topic_nouns[self.rng.below(self.cast.topic_nouns.len())];
            self.put_slot(word);
        } else if self.put_drawn(|l| &l.nouns) && self.rng.percent(25) {
            self.mark("s");
        }
    }

    fn adjective(&mut self) {
        if self.rng.percent(TOPIC_PERCENT) {
            let word = self.cast.topic_adjectives[self.rng.below(self.cast.topic_adjectives.len())];
            self.put_slot(word);
        } else {
            self.put_drawn(|l| &l.adjectives);
        }
    }

    fn verb(&mut self) {
        if self.rng.percent(20) {
            self.put_drawn(|l| &l.auxiliaries);
        }
        if self.put_drawn(|l| &l.verbs) {
            let ending = ["ed", "ed", "ed", "s", "ing", "", ""][self.rng.below(7)];
            self.mark(ending);
        }
    }

    /// Names someone; true at their first mention.
    fn person(&mut self) -> bool {
        let who = self.rng.below(self.cast.people.len());
        let first = !self.cast.people[who].mentioned;
        self.cast.people[who].mentioned = true;
        // Taken out and put back, so naming someone allocates nothing.
        let name = if first {
            std::mem::take(&mut self.cast.people[who].full)
        } else {
            std::mem::take(&mut self.cast.people[who].short)
        };
        self.put(&name);
        if first {
            self.cast.people[who].full = name;
        } else {
            self.cast.people[who].short = name;
        }
        first
    }

    fn place(&mut self) {
        let which = self.rng.below(self.cast.places.len());
        let place = std::mem::take(&mut self.cast.places[which]);
        self.put(&place);
        self.cast.places[which] = place;
    }

    fn organisation(&mut self) {
        let which = self.rng.below(self.cast.organisations.len());
        let organisation = std::mem::take(&mut self.cast.organisations[which]);
        self.put(&organisation);
        self.cast.organisations[which] = organisation;
    }

    fn noun_phrase(&mut self, subject: bool) {
        match self.rng.below(100) {
            0..=8 => {
                self.person();
            }
            9..=13 => self.place(),
            14..=18 => self.organisation(),
            19..=26 if subject => {
                self.put_drawn(|l| &l.pronouns);
            }
            27..=30 => {
                self.organisation();
                self.mark("’s");
                if self.rng.percent(30) {
                    self.adjective();
                }
                self.noun();
            }
            _ => {
                if self.rng.percent(75) {
                    self.put_drawn(|l| &l.determiners);
                }
                if self.rng.percent(30) {
                    self.adjective();
                    if self.rng.percent(12) {
                        self.adjective();
                    }
                }
                self.noun();
                if self.rng.percent(15) {
                    self.put_drawn(|l| &l.prepositions);
                    self.noun_phrase(false);
                }
            }
        }
    }

    fn prepositional_phrase(&mut self) {
        self.put_drawn(|l| &l.prepositions);
        self.noun_phrase(false);
    }

    fn verb_phrase(&mut self) {
        if self.rng.percent(8) {
            self.put_drawn(|l| &l.adverbs);
        }
        self.verb();
        if self.rng.percent(65) {
            self.noun_phrase(false);
        }
        if self.rng.percent(50) {
            self.prepositional_phrase();
            if self.rng.percent(25) {
                self.prepositional_phrase();
            }
        }
        if self.rng.percent(6) {
            self.put_drawn(|l| &l.adverbs);
        }
    }

    fn clause(&mut self) {
        self.noun_phrase(true);
        self.verb_phrase();
    }

    /// Writes formatted text in place (numbers never start a sentence with
    /// a lower-case letter, so no capitalising is needed).
    fn put_fmt(&mut self, args: std::fmt::Arguments) {
        self.space();
        let _ = std::io::Write::write_fmt(&mut self.text, args);
        self.capital = false;
    }

    fn number(&mut self) {
        match self.rng.below(9) {
            0 | 1 => {
                let n = self.rng.between(2..=99);
                self.put_fmt(format_args!("{n}"));
            }
            2 => {
                let (thousands, units) = (self.rng.between(1..=950), self.rng.below(1000));
                self.put_fmt(format_args!("{thousands},{units:03}"));
            }
            3 => {
                let (whole, tenth) = (self.rng.between(1..=99), self.rng.below(10));
                self.put_fmt(format_args!("{whole}.{tenth}"));
            }
            4 => {
                let n = self.rng.between(100..=999);
                self.put_fmt(format_args!("{n}"));
            }
            5 => {
                let year = self.rng.between(1950..=2026);
                self.put_fmt(format_args!("{year}"));
            }
            _ => {
                let few = [
                    "two",
                    "three",
                    "four",
                    "five",
                    "six",
                    "ten",
                    "dozens of",
                    "hundreds of",
                ][self.rng.below(8)];
                self.put(few);
            }
        }
    }

    fn money(&mut self) {
        let currency = CURRENCIES[self.rng.below(CURRENCIES.len())];
        let amount = self.rng.between(1..=950);
        let magnitude = MAGNITUDES[self.rng.below(MAGNITUDES.len())];
        if self.rng.percent(40) {
            let tenth = self.rng.below(10);
            self.put_fmt(format_args!("{currency}{amount}.{tenth}{magnitude}"));
        } else {
            self.put_fmt(format_args!("{currency}{amount}{magnitude}"));
        }
    }

    fn percentage(&mut self) {
        let (whole, tenth) = (self.rng.between(1..=60), self.rng.below(10));
        if self.rng.percent(50) {
            self.put_fmt(format_args!("{whole}.{tenth} per cent"));
        } else {
            self.put_fmt(format_args!("{whole}.{tenth}%"));
        }
    }

    fn when(&mut self) {
        match self.rng.below(5) {
            0 => {
                self.put("on");
                self.put_any(WEEKDAYS);
            }
            1 => {
                self.put("on");
                let (day, month) = (self.rng.between(1..=28), MONTHS[self.rng.below(12)]);
                self.put_fmt(format_args!("{day} {month}"));
            }
            2 => {
                self.put("in");
                let year = self.rng.between(1990..=2026);
                self.put_fmt(format_args!("{year}"));
            }
            3 => {
                self.put("last");
                self.put_any(PERIODS);
            }
            _ => {
                self.put("earlier this");
                self.put_any(&PERIODS[..3]);
            }
        }
    }

    fn figures_sentence(&mut self) {
        self.noun_phrase(true);
        self.verb();
        match self.rng.below(4) {
            0 => {
                self.put("by");
                self.percentage();
                self.put("to");
                self.money();
            }
            1 => {
                self.money();
                self.prepositional_phrase();
            }
            2 => {
                self.number();
                let unit = UNITS[self.rng.below(UNITS.len())];
                self.put(unit);
            }
            _ => {
                self.percentage();
                self.put("of");
                self.noun_phrase(false);
            }
        }
        if self.rng.percent(40) {
            self.when();
        }
        self.end_sentence();
    }

    fn attribution(&mut self) {
        let saying = SAYING[self.rng.below(SAYING.len())];
        let first = if self.rng.percent(50) {
            self.put(saying);
            self.person()
        } else {
            let first = self.person();
            self.put(saying);
            first
        };
        if first && self.rng.percent(50) {
            self.mark(",");
            let role = ROLES[self.rng.below(ROLES.len())];
            self.put(role);
            self.organisation();
        }
    }

    fn quote(&mut self) {
        match self.rng.below(3) {
            0 => {
                self.person();
                self.put("said:");
                self.open_quote();
                self.clause();
                if self.rng.percent(40) {
                    self.end_sentence();
                    self.clause();
                }
                self.end_sentence();
                self.mark("”");
            }
            _ => {
                self.open_quote();
                self.clause();
                if self.rng.percent(30) {
                    self.mark(",");
                    self.put_drawn(|l| &l.conjunctions);
                    self.clause();
                }
                let close = if self.rng.percent(10) { "?”" } else { ",”" };
                self.mark(close);
                self.attribution();
                self.end_sentence();
            }
        }
    }

    fn open_quote(&mut self) {
        self.space();
        self.mark("“");
        self.glued = true;
        self.capital = true;
    }

    fn sentence(&mut self) {
        match self.rng.below(100) {
            0..=27 => {
                self.clause();
                self.end_sentence();
            }
            28..=39 => {
                self.clause();
                self.mark(",");
                self.put_drawn(|l| &l.conjunctions);
                self.clause();
                self.end_sentence();
            }
            40..=53 => self.quote(),
            54..=63 => {
                match self.rng.below(4) {
                    0 => {
                        self.put("In");
                        self.place();
                    }
                    1 => {
                        self.capital = true;
                        self.when();
                    }
                    _ => {
                        self.put_any(OPENERS);
                    }
                }
                self.mark(",");
                self.clause();
                self.end_sentence();
            }
            64..=72 => {
                if self.rng.percent(50) {
                    self.person();
                } else {
                    self.organisation();
                }
                self.put("said");
                if self.rng.percent(40) {
                    self.when();
                }
                self.put("that");
                self.clause();
                self.end_sentence();
            }
            73..=81 => self.figures_sentence(),
            82..=89 => {
                self.clause();
                self.put("—");
                self.noun_phrase(false);
                self.verb_phrase();
                self.put("—");
                self.verb_phrase();
                self.end_sentence();
            }
            90..=94 => {
                self.noun_phrase(true);
                self.verb_phrase();
                self.put("(");
                self.glued = true;
                self.noun_phrase(false);
                self.mark(")");
                self.end_sentence();
            }
            _ => {
                if self.rng.percent(50) {
                    self.person();
                } else {
                    self.organisation();
                }
                let stock = STOCK[self.rng.below(STOCK.len())];
                self.put(stock);
                self.end_sentence();
            }
        }
    }

    /// Sentences in paragraphs until the text reaches `target` bytes; the
    /// sentence that crosses it is finished.
    fn body(&mut self, target: usize) {
        let mut first = true;
        while self.text.len() < target {
            if !first {
                self.mark("\n\n");
            }
            self.glued = true;
            self.capital = true;
            let sentences = if first { 1 } else { self.rng.between(1..=4) };
            first = false;
            for _ in 0..sentences {
                self.sentence();
                if self.text.len() >= target {
                    break;
                }
            }
        }
    }

    /// Moves the written text out, leaving the writer ready for the next
    /// field.
    fn take(&mut self) -> String {
        self.glued = true;
        self.capital = true;
        String::from_utf8(std::mem::take(&mut self.text)).expect("the corpus writes UTF-8")
    }
}

/// Publication time of article `i`, seconds since 1970: 3% spread over
/// 1851-1969, 12% over 1970-1999, 85% since 2000 with density rising
/// towards mid-2026. Computed apart from the text so range queries can draw
/// days the way articles are dated without generating articles.
pub fn published_at(i: usize) -> i64 {
    let mut rng = Rng::new(i as u64 ^ 0xDA7E_0000_0000_0000);
    let (era, within) = (rng.unit(), rng.unit());
    let (from, to, position) = if era < 0.03 {
        (FIRST_DATE, Y1970, within)
    } else if era < 0.15 {
        (Y1970, Y2000, within)
    } else if rng.percent(40) {
        (Y2000, LAST_DATE, within)
    } else {
        // Density rising linearly towards the present.
        (Y2000, LAST_DATE, within.sqrt())
    };
    from + ((to - from) as f64 * position) as i64
}

/// Lower-case ASCII words of the title, for the url.
fn slug(title: &str) -> String {
    let mut slug = String::with_capacity(64);
    for word in title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(9)
    {
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    }
    slug
}

/// Article number `i`. The same `i` always gives the same article, and no
/// two numbers give the same url (so the same derived id).
/// The corpus's sources, sections and tags, most frequent first (each is
/// drawn by rank, with a Zipf law): what the query benchmark filters on.
pub fn labels() -> (&'static [String], &'static [String], &'static [String]) {
    let lexicon = lexicon();
    (
        &lexicon.sources.names,
        &lexicon.sections.names,
        &lexicon.tags.names,
    )
}

pub fn article(i: usize) -> proto::Article {
    let lexicon = lexicon();
    let mut rng = Rng::new(i as u64);
    let cast = Cast::new(&mut rng, lexicon);
    let body_target =
        BODY_MIN + ((BODY_TARGET_MAX - BODY_MIN) as f64 * rng.unit().powf(1.7)) as usize;
    let source = lexicon.sources.draw(&mut rng).to_string();
    let section = lexicon.sections.draw(&mut rng).to_string();
    let authors = match rng.below(100) {
        0..=7 => Vec::new(),
        8..=77 => vec![lexicon.authors.draw(&mut rng).to_string()],
        78..=94 => (0..2)
            .map(|_| lexicon.authors.draw(&mut rng).to_string())
            .collect(),
        _ => (0..3)
            .map(|_| lexicon.authors.draw(&mut rng).to_string())
            .collect(),
    };
    let mut tag_ranks: Vec<usize> = (0..rng.between(2..=7))
        .map(|_| lexicon.tags.draw_rank(&mut rng))
        .collect();
    tag_ranks.sort_unstable();
    tag_ranks.dedup();
    let tags = tag_ranks
        .iter()
        .map(|&rank| lexicon.tags.names[rank].clone())
        .collect();
    let language = match rng.below(100) {
        0..=93 => "en",
        94..=96 => "en-GB",
        97..=98 => "en-US",
        _ => "",
    };
    let seconds = published_at(i);

    let mut writer = Writer {
        text: Vec::with_capacity(body_target + 512),
        rng,
        lexicon,
        cast,
        capital: true,
        glued: true,
    };
    writer.body(body_target);
    let body = writer.take();
    writer.clause();
    if writer.rng.percent(40) {
        writer.prepositional_phrase();
    }
    let title = writer.take();
    writer.clause();
    writer.end_sentence();
    if writer.rng.percent(50) {
        writer.mark(" ");
        writer.glued = true;
        writer.clause();
        writer.end_sentence();
    }
    let description = writer.take();

    let (year, month, day) = civil(seconds);
    let section_slug = section.to_lowercase();
    proto::Article {
        url: format!(
            "https://{source}/{section_slug}/{year}/{month:02}/{day:02}/{}-{i}",
            slug(&title)
        ),
        title,
        body,
        published_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        authors,
        source,
        section,
        tags,
        language: language.into(),
        description,
        ..Default::default()
    }
}
