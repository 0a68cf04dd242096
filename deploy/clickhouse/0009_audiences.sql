-- Ad-platform audiences in the warehouse (docs/decisions/0013-audiences-for-ad-platforms.md), written
-- by the audiences sink from audiences.deltas and read by the pull API (streams/warehouse/audiences.py).
-- The Kafka offset of a delta is the API's cursor: cursor c means every delta at an offset < c.
--
-- Delivery is at least once; a replayed record keeps its offset and values, so both delta tables are
-- ReplacingMergeTrees whose sorting key holds the whole record: a replay collapses, and argMax by
-- kafka_offset reads exactly without FINAL before it does.

-- Deltas by offset: the rows of one audience in an offset range are a primary-key range read.
CREATE TABLE IF NOT EXISTS audience_deltas
(
    destination_id String,
    audience_id String,
    kind String,
    hash String,
    added UInt8,
    kafka_offset UInt64,
    at DateTime,
    at_ms UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (destination_id, audience_id, kafka_offset, kind, hash);

-- The same rows ordered for snapshots: one hash range of one audience is a primary-key range read.
-- The sink writes this table itself, before audience_deltas in each batch, rather than through a
-- materialized view: a view is filled after its source table, so a reader could see an offset in
-- audience_deltas whose row is not here yet. With this order, every offset below the frontier
-- (max offset + 1 of audience_deltas) is in both tables, on 18.16 and on a current ClickHouse alike.
CREATE TABLE IF NOT EXISTS audience_members
(
    destination_id String,
    audience_id String,
    kind String,
    hash String,
    added UInt8,
    kafka_offset UInt64,
    at DateTime,
    at_ms UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (destination_id, audience_id, hash, kind, kafka_offset);

-- Every pull of the API (and of the operator's CLI): who read which audience, how much, between which
-- cursors. operation: snapshot (one row per page), deltas, export, list.
CREATE TABLE IF NOT EXISTS audience_pulls
(
    destination_id String,
    audience_id String,
    operation String,
    rows UInt64,
    cursor_from UInt64,
    cursor_to UInt64,
    client String,
    at DateTime,
    ingested_at DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (destination_id, at);

-- Where the retained deltas begin: a cursor below the newest retained_from is expired (410, take a new
-- snapshot). Retention of audience_deltas records its boundary here; without a row every cursor from 0
-- is valid.
CREATE TABLE IF NOT EXISTS audience_retention
(
    retained_from UInt64,
    reason String,
    at DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY retained_from;
