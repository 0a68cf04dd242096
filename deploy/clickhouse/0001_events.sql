-- Raw events from every channel, one row per event. Written by the history sink.
-- Delivery into this table is at least once; ReplacingMergeTree collapses replays of the same
-- (channel, day, message_id) on merge, and the events_dedup view (0002) reads it exactly with FINAL.
CREATE TABLE IF NOT EXISTS events
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
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (channel, toDate(timestamp), message_id);

-- Records that failed anywhere (collector, import, sink, ...), mirrored from the events.invalid topic.
CREATE TABLE IF NOT EXISTS invalid_events
(
    stage String,
    reason String,
    field String,
    source String,
    position String,
    original String,
    received_at DateTime,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (stage, received_at, kafka_partition, kafka_offset);
