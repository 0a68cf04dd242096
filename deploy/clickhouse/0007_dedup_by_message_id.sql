-- One row per (channel, message_id), whatever the event's timestamp: a retried event is one event.
-- 0001 and 0003 deduplicated on (channel, toDate(timestamp), message_id), so two copies of one message
-- stamped on different days (a retry after midnight, a corrected client clock) stayed two rows.
--
-- The sorting key of a MergeTree cannot be changed in place on ClickHouse 18.16, so each table is
-- rebuilt: create the new table, swap the names, copy the old rows in, drop the old table.
--   - The names are swapped before the copy, so a sink writing during the migration writes into the
--     new table and nothing it writes is left behind in the old one. Until the copy is done, reads see
--     only part of the history.
--   - The copy lists its columns, so it does not depend on column order; dedup_version is computed.
--   - PARTITION BY stays toYYYYMM(timestamp). Background merges dedupe only inside a partition, but
--     SELECT ... FINAL (events_dedup, events_by_person) merges rows of one key across partitions
--     (ClickHouse 18.16 always; current ClickHouse too, because the partition key is not part of the
--     sorting key: tests/integration/test_dedup_by_message_id.py proves both).
--   - The views of 0002 and 0004 name the tables, so they read the new ones unchanged.
--   - The copy of event_persons also brings each row's revenue to the one revenue definition (below).
--
-- Which copy wins (dedup_version, the ReplacingMergeTree version; the largest wins): the copy received
-- first, the one the segment stage counted (it skips a message id it has seen). Equal received_at
-- (seconds): for events the lower Kafka offset, for event_persons the earlier resolution. A replay of
-- the same record is the same row either way.
--
-- Re-running after a failure: the CREATE statements and the copies can run again (copies of a key
-- collapse), but a re-run of the whole file after the names were swapped stops at the RENAME
-- (events_before_0007 exists). Then finish by hand from the failed statement on and record the
-- migration (docs/decisions/0002-dedup-by-message-id.md says how).

CREATE TABLE IF NOT EXISTS events_0007
(
    message_id String,
    type Enum8('track' = 1, 'identify' = 2, 'page' = 3, 'screen' = 4, 'alias' = 5, 'group' = 6),
    channel Enum8('web' = 1, 'app' = 2, 'email' = 3, 'store' = 4),
    source String,
    event String,
    name String,
    anonymous_id String,
    user_id String,
    previous_id String,
    group_id String,
    email String,
    phone String,
    esp_subscriber_id String,
    loyalty_card String,
    crm_id String,
    device_id String,
    advertising_id String,
    device_type String,
    ip String,
    user_agent String,
    locale String,
    timezone String,
    page_url String,
    page_path String,
    page_referrer String,
    campaign_name String,
    campaign_source String,
    campaign_medium String,
    store_id String,
    terminal_id String,
    transaction_id String,
    line_sku Array(String),
    line_ean Array(String),
    line_app_product_id Array(String),
    line_quantity Array(Float64),
    line_unit_price Array(Nullable(Float64)),
    line_currency Array(String),
    currency String,
    traits String,
    properties String,
    timestamp DateTime,
    timestamp_ms UInt64,
    sent_at_ms UInt64,
    received_at DateTime,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now(),
    -- High 32 bits: the earlier received_at, the larger; low 32 bits: the lower offset, the larger.
    dedup_version UInt64 MATERIALIZED
        toUInt64(4294967295 - toUInt32(received_at)) * 4294967296
        + (4294967295 - toUInt32(least(kafka_offset, 4294967295)))
)
ENGINE = ReplacingMergeTree(dedup_version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (channel, message_id);

RENAME TABLE events TO events_before_0007, events_0007 TO events;

INSERT INTO events
(
    message_id, type, channel, source, event, name, anonymous_id, user_id, previous_id, group_id,
    email, phone, esp_subscriber_id, loyalty_card, crm_id, device_id, advertising_id, device_type, ip,
    user_agent, locale, timezone, page_url, page_path, page_referrer, campaign_name, campaign_source,
    campaign_medium, store_id, terminal_id, transaction_id, line_sku, line_ean, line_app_product_id,
    line_quantity, line_unit_price, line_currency, currency, traits, properties, timestamp, timestamp_ms,
    sent_at_ms, received_at, kafka_partition, kafka_offset, ingested_at
)
SELECT
    message_id, type, channel, source, event, name, anonymous_id, user_id, previous_id, group_id,
    email, phone, esp_subscriber_id, loyalty_card, crm_id, device_id, advertising_id, device_type, ip,
    user_agent, locale, timezone, page_url, page_path, page_referrer, campaign_name, campaign_source,
    campaign_medium, store_id, terminal_id, transaction_id, line_sku, line_ean, line_app_product_id,
    line_quantity, line_unit_price, line_currency, currency, traits, properties, timestamp, timestamp_ms,
    sent_at_ms, received_at, kafka_partition, kafka_offset, ingested_at
FROM events_before_0007;

DROP TABLE events_before_0007;

CREATE TABLE IF NOT EXISTS event_persons_0007
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
    ingested_at DateTime DEFAULT now(),
    -- High 32 bits: the earlier received_at, the larger; low 32 bits: the earlier resolution, the larger.
    dedup_version UInt64 MATERIALIZED
        toUInt64(4294967295 - toUInt32(received_at)) * 4294967296
        + (4294967295 - toUInt32(resolved_at))
)
ENGINE = ReplacingMergeTree(dedup_version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (channel, message_id);

RENAME TABLE event_persons TO event_persons_before_0007, event_persons_0007 TO event_persons;

-- The copy also brings each event's revenue to the one definition (streams/domain/revenue.py): + the
-- value of an Order Completed, - the value of an Order Refunded or Product Returned, 0 otherwise; the
-- value is properties.revenue, else properties.total (read from events), else the lines' total that
-- event_persons held. Read with visitParamExtractRaw (no JSONExtract on 18.16), which takes the first
-- "revenue" or "total" key at any depth and reads plain decimals only (not 1e3): a row whose events
-- record is missing or unreadable keeps its lines' total.
INSERT INTO event_persons
(
    message_id, channel, type, event, name, source, person_id, identifiers, anonymous_id, user_id,
    page_path, store_id, revenue, currency, timestamp, timestamp_ms, received_at, resolved_at,
    resolved_at_ms, kafka_partition, kafka_offset, ingested_at
)
SELECT
    message_id, channel, type, event, name, source, person_id, identifiers, anonymous_id, user_id,
    page_path, store_id,
    multiIf(
        event = 'Order Completed', order_value,
        event IN ('Order Refunded', 'Product Returned'), -order_value,
        0
    ) AS signed_revenue,
    currency, timestamp, timestamp_ms, received_at, resolved_at, resolved_at_ms, kafka_partition,
    kafka_offset, ingested_at
FROM
(
    SELECT
        message_id, channel, type, event, name, source, person_id, identifiers, anonymous_id, user_id,
        page_path, store_id, currency, timestamp, timestamp_ms, received_at, resolved_at, resolved_at_ms,
        kafka_partition, kafka_offset, ingested_at,
        ifNull(stated_revenue, ifNull(stated_total, lines_revenue)) AS order_value
    FROM
    (
        SELECT
            message_id, channel, type, event, name, source, person_id, identifiers, anonymous_id,
            user_id, page_path, store_id, revenue AS lines_revenue, currency, timestamp, timestamp_ms,
            received_at, resolved_at, resolved_at_ms, kafka_partition, kafka_offset, ingested_at
        FROM event_persons_before_0007
    ) AS resolved
    ANY LEFT JOIN
    (
        SELECT
            channel,
            message_id,
            toFloat64OrNull(visitParamExtractRaw(properties, 'revenue')) AS stated_revenue,
            toFloat64OrNull(visitParamExtractRaw(properties, 'total')) AS stated_total
        FROM events
        WHERE event IN ('Order Completed', 'Order Refunded', 'Product Returned')
    ) AS stated USING (channel, message_id)
);

DROP TABLE event_persons_before_0007;
