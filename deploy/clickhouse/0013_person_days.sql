-- History that outlives the raw events (docs/retention.md). With OMNISEG_EVENTS_RETENTION_DAYS set,
-- the retention job (streams/warehouse/retention.py) first folds the days about to go into the
-- rollups below, then moves the boundary (retention_folds), then deletes the raw rows of those days
-- (ClickHouse 18.16) or lets a TTL delete them (current ClickHouse). The KPIs over the whole history
-- read the views person_history and checkout_history: the rollups for the days before the boundary,
-- the raw tables from the boundary on. Without retention the boundary is 1970-01-01 and the views read
-- the raw tables only, exactly as before.
--
-- Why a fold and not a materialized view: delivery into events and event_persons is at least once, and
-- the raw tables count each message once only when read with FINAL. A materialized view sees every
-- delivered copy and would count a replayed batch twice, forever. The fold reads the raw tables with
-- FINAL, so each event counts once; re-folding a day writes the same key again and the newest fold wins
-- (ReplacingMergeTree), so a fold that failed half-way is simply run again.

-- Per resolved person, day (event time, server time zone) and channel: what the lifetime KPIs need.
-- person_id is the person the events resolved to when they happened (like event_persons.person_id);
-- person_history maps it to the canonical person at read time, so later merges still apply.
-- returned_value is positive (the value of Order Refunded and Product Returned); revenue is the net
-- sum of event_persons.revenue. first_order_at and last_order_at are 1970-01-01 00:00:00 without orders.
CREATE TABLE IF NOT EXISTS person_days
(
    person_id String,
    day Date,
    channel Enum8('web' = 1, 'app' = 2, 'email' = 3, 'store' = 4),
    events UInt64,
    visits UInt64,
    orders UInt64,
    returns UInt64,
    order_value Float64,
    returned_value Float64,
    revenue Float64,
    first_order_at DateTime,
    last_order_at DateTime,
    folded_at DateTime
)
ENGINE = ReplacingMergeTree(folded_at)
PARTITION BY toYYYYMM(day)
ORDER BY (person_id, day, channel);

-- Checkout Started events per day and channel, resolved or not (aov_by_channel counts anonymous carts
-- too): how many, how many carry the cart's value (properties.value, else properties.revenue), and the
-- sum of those values.
CREATE TABLE IF NOT EXISTS checkout_days
(
    day Date,
    channel Enum8('web' = 1, 'app' = 2, 'email' = 3, 'store' = 4),
    checkouts UInt64,
    valued_checkouts UInt64,
    checkout_value Float64,
    folded_at DateTime
)
ENGINE = ReplacingMergeTree(folded_at)
ORDER BY (day, channel);

-- The boundary: every day before the newest folded_until is in the rollups, and the views do not read
-- the raw rows of those days (some may still be there until the delete or the TTL removes them).
CREATE TABLE IF NOT EXISTS retention_folds
(
    folded_until Date,
    retention_days UInt32,
    person_days UInt64,
    checkout_days UInt64,
    at DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY folded_until;

-- Per canonical person, day and channel over the whole history: the rollup before the boundary, the
-- resolved events (event_persons, each once) from the boundary on.
CREATE VIEW IF NOT EXISTS person_history AS
SELECT
    if(canonical_person_id = '', resolved_person_id, canonical_person_id) AS person_id,
    resolved_person_id,
    day,
    channel,
    events,
    visits,
    orders,
    returns,
    order_value,
    returned_value,
    revenue,
    first_order_at,
    last_order_at
FROM
(
    SELECT
        person_id AS resolved_person_id, day, channel, events, visits, orders, returns, order_value,
        returned_value, revenue, first_order_at, last_order_at
    FROM person_days
    FINAL
    WHERE day < (SELECT max(folded_until) FROM retention_folds)
    UNION ALL
    -- Aggregates get new names: an alias equal to a column name replaces that column everywhere.
    SELECT
        person_id AS resolved_person_id,
        event_day AS day,
        channel,
        count() AS events,
        countIf(type IN ('page', 'screen')) AS visits,
        countIf(event = 'Order Completed') AS orders,
        countIf(event IN ('Order Refunded', 'Product Returned')) AS returns,
        sumIf(amount, event = 'Order Completed') AS order_value,
        -sumIf(amount, event IN ('Order Refunded', 'Product Returned')) AS returned_value,
        sum(amount) AS revenue,
        minIf(timestamp, event = 'Order Completed') AS first_order_at,
        maxIf(timestamp, event = 'Order Completed') AS last_order_at
    FROM
    (
        SELECT person_id, toDate(timestamp) AS event_day, channel, type, event, revenue AS amount, timestamp
        FROM event_persons
        FINAL
        WHERE toDate(timestamp) >= (SELECT max(folded_until) FROM retention_folds)
    )
    GROUP BY person_id, event_day, channel
) AS days
ANY LEFT JOIN
(
    SELECT person_id AS resolved_person_id, canonical_person_id FROM person_canonical
) AS canonical USING resolved_person_id;

-- Checkout Started events per day and channel over the whole history: the rollup before the boundary,
-- the raw events (each once) from the boundary on.
CREATE VIEW IF NOT EXISTS checkout_history AS
SELECT day, channel, checkouts, valued_checkouts, checkout_value
FROM
(
    SELECT day, channel, checkouts, valued_checkouts, checkout_value
    FROM checkout_days
    FINAL
    WHERE day < (SELECT max(folded_until) FROM retention_folds)
    UNION ALL
    SELECT
        event_day AS day,
        channel,
        count() AS checkouts,
        countIf(valued) AS valued_checkouts,
        sumIf(cart_value, valued) AS checkout_value
    FROM
    (
        SELECT
            toDate(timestamp) AS event_day,
            channel,
            visitParamHas(properties, 'value') OR visitParamHas(properties, 'revenue') AS valued,
            if(visitParamHas(properties, 'value'), visitParamExtractFloat(properties, 'value'),
                visitParamExtractFloat(properties, 'revenue')) AS cart_value
        FROM events
        FINAL
        WHERE event = 'Checkout Started' AND toDate(timestamp) >= (SELECT max(folded_until) FROM retention_folds)
    )
    GROUP BY event_day, channel
);
