-- Schema 1 of the archive on PostgreSQL. Applied once, in one transaction,
-- by the first `article-archive serve --store postgres://...` that finds
-- the database without it (src/store/postgres/schema.rs).
--
-- Plain tables, b-tree indexes and arrays only: nothing that managed
-- PostgreSQL services or the distributed engines that speak its protocol
-- lack. Ids and timestamps are the application's: no serial columns, no
-- now(). Ids are compared byte by byte (COLLATE "C"), as the sled engine
-- orders them, so both engines page in the same order.

-- Settings of the archive: the key that signs page tokens (so a token from
-- one replica is good at every other).
CREATE TABLE archive_settings (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- The change feed's head: the last sequence number given out, and the
-- number of live articles (kept with each write, so every replica can
-- report it without counting the table). Every
-- writing transaction updates this one row first and holds its lock until
-- it commits, so writers (on any replica) take sequence numbers one
-- transaction after another and commit in that order: a reader that sees
-- change N committed sees every change before it.
CREATE TABLE feed_head (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_sequence bigint NOT NULL,
    live_articles bigint NOT NULL
);
INSERT INTO feed_head (singleton, last_sequence, live_articles) VALUES (true, 0, 0);

-- The current version of every live article. Times are seconds and
-- nanoseconds since the Unix epoch (timestamptz keeps microseconds only);
-- published_day is the UTC day number, for counts.
CREATE TABLE articles (
    id             text COLLATE "C" PRIMARY KEY,
    revision       bigint NOT NULL,
    sequence       bigint NOT NULL UNIQUE,
    ingested_s     bigint NOT NULL,
    ingested_ns    integer NOT NULL,
    content_sha256 bytea NOT NULL,
    url            text NOT NULL,
    -- The host-reversed url key the sled engine's `urls` index uses
    -- (src/store/keys.rs url_index_key), so url page tokens mean the same
    -- on both engines; NULL when the url has no host.
    url_key        bytea,
    title          text NOT NULL,
    body           text NOT NULL,
    published_s    bigint NOT NULL,
    published_ns   integer NOT NULL,
    published_day  bigint NOT NULL,
    authors        text[] NOT NULL,
    source         text NOT NULL,
    source_lower   text NOT NULL,
    section        text NOT NULL,
    tags           text[] NOT NULL,
    language       text NOT NULL,
    description    text NOT NULL
);
CREATE INDEX articles_by_date ON articles (published_s, published_ns, id);
CREATE INDEX articles_by_source ON articles (source_lower, published_s, published_ns, id);
CREATE INDEX articles_by_section ON articles (section, published_s, published_ns, id);
CREATE INDEX articles_by_url ON articles (url_key);

-- Older revisions, the same columns. A row moves here when a newer
-- revision replaces it; deletions and --keep-revisions remove rows.
CREATE TABLE revisions (LIKE articles);
ALTER TABLE revisions ADD PRIMARY KEY (id, revision);
ALTER TABLE revisions ADD UNIQUE (sequence);

-- Live articles per UTC day of publication, kept by the writers with
-- each batch, so an unfiltered count reads one row a day instead of the
-- table. A day whose articles all went keeps a row of 0.
CREATE TABLE day_counts (
    day      bigint PRIMARY KEY,
    articles bigint NOT NULL
);

-- Deleted ids: a takedown keeps refusing re-ingest unless allowed.
CREATE TABLE tombstones (
    id             text COLLATE "C" PRIMARY KEY,
    sequence       bigint NOT NULL,
    deleted_s      bigint NOT NULL,
    deleted_ns     integer NOT NULL,
    allow_reingest boolean NOT NULL
);

-- The change feed: one row per stored version (kind 1 CREATED, 2 UPDATED)
-- and per deletion (3 DELETED). A version's content is found by its
-- sequence in articles or revisions; when it is in neither (deleted or
-- pruned), the change is passed over, as on sled.
CREATE TABLE changes (
    sequence   bigint PRIMARY KEY,
    kind       smallint NOT NULL,
    id         text COLLATE "C" NOT NULL,
    revision   bigint NOT NULL,
    changed_s  bigint NOT NULL,
    changed_ns integer NOT NULL,
    reason     text NOT NULL
);
