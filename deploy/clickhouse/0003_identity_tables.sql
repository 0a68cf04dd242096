-- Identity resolution in the warehouse. Written by the identity sink (streams/agents/identity_sink.py)
-- from the topics identity.assignments, identity.changes and events.resolved. Delivery is at least
-- once: every table below is a ReplacingMergeTree whose sorting key is the record's natural key, and
-- the views of 0004 read them exactly (FINAL or argMax), so a replayed record is never counted twice.
-- Analysts normally query the views of 0004 (identities_current, person_canonical, events_by_person),
-- not these tables.

-- Which person owns each normalised identifier, one row per assignment version (identity.assignments).
-- identifier is the key "kind:value" (e.g. email:ann@shop.com); version grows with every re-assignment,
-- so the newest owner wins. person_id is the owner at that version; it may since have been merged into
-- an older person: identities_current (0004) maps it to the canonical person.
CREATE TABLE IF NOT EXISTS identities
(
    identifier String,
    kind String,
    value String,
    person_id String,
    version UInt64,
    first_seen DateTime,
    at DateTime,
    at_ms UInt64,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY identifier;

-- One row per merge decision (identity.changes, kind = merged), deduplicated by change_id.
-- person_id is the survivor (the older person); merged_person_id was folded into it, together with
-- every id in merged_person_ids (the merged person itself and everything already merged into it).
CREATE TABLE IF NOT EXISTS identity_merges
(
    change_id String,
    person_id String,
    merged_person_id String,
    merged_person_ids Array(String),
    identifiers Array(String),
    reason String,
    message_id String,
    channel String,
    at DateTime,
    at_ms UInt64,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(at)
ORDER BY change_id;

-- One row per refused link (identity.changes, kind = rejected), deduplicated by change_id.
-- person_id: the person the event resolved to; identifier: the refused key, which stayed with
-- conflicting_person_id (empty when the identifier was new and the person's limit was full).
CREATE TABLE IF NOT EXISTS identity_rejections
(
    change_id String,
    person_id String,
    identifier String,
    identifiers Array(String),
    conflicting_person_id String,
    reason String,
    message_id String,
    channel String,
    at DateTime,
    at_ms UInt64,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(at)
ORDER BY change_id;

-- Old person id -> the survivor it was merged into, one row per (old id, survivor) pair, from each
-- merge's merged_person_ids. Because merged_person_ids is chain-closed (a merge of B into C also lists
-- A when A had been merged into B), every id that ever ended up in C has a row pointing at C itself.
-- An id merged twice over (A -> B, then B -> C) has a row per step; the current one is the row whose
-- target has not been merged itself, which is what person_canonical (0004) selects. That rule does not
-- depend on the order in which merges reach ClickHouse (they come from different partitions).
-- version is the merge's event time in ms, used only to break ties between rows that are both current.
CREATE TABLE IF NOT EXISTS person_aliases
(
    person_id String,
    canonical_person_id String,
    change_id String,
    version UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (person_id, canonical_person_id);

-- Every resolved event with the person it resolved to at the time (events.resolved), deduplicated by
-- message_id (channel and timestamp are part of the event, so a duplicate has the same key). The newest
-- resolution of a message wins (version resolved_at_ms). The full event stays in `events`; join on
-- message_id for fields not copied here. events_by_person (0004) maps person_id to the canonical person.
CREATE TABLE IF NOT EXISTS event_persons
(
    message_id String,
    channel Enum8('web' = 1, 'app' = 2, 'email' = 3, 'store' = 4),
    type Enum8('track' = 1, 'identify' = 2, 'page' = 3, 'screen' = 4, 'alias' = 5, 'group' = 6),
    event String,
    name String,
    source String,
    person_id String,
    identifiers Array(String),
    anonymous_id String,
    user_id String,
    page_path String,
    store_id String,
    revenue Float64,
    currency String,
    timestamp DateTime,
    timestamp_ms UInt64,
    received_at DateTime,
    resolved_at DateTime,
    resolved_at_ms UInt64,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(resolved_at_ms)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (channel, toDate(timestamp), message_id);
