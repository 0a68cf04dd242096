-- Segments in the warehouse, written by the segments sink (streams/agents/segments_sink.py) from
-- segments.changes and segments.definitions. Delivery is at least once and a change published again
-- after a worker crash keeps its change_id and seq, so segment_changes is a ReplacingMergeTree keyed by
-- (segment_id, subject, person_id, seq): a replay collapses, and the views below read it exactly.

-- Membership history: one row per enter/exit. Per (segment_id, subject, person_id) the rows alternate
-- entered (odd seq) and exited (even seq). subject is '' for segments, 'product:<id>' or
-- 'category:<name>' for per-product suppression audiences. A merged person exits everything
-- (trigger 'merge'), so no person-id folding is needed to read current membership.
CREATE TABLE IF NOT EXISTS segment_changes
(
    change_id String,
    person_id String,
    segment_id String,
    subject String,
    change Enum8('entered' = 1, 'exited' = 2),
    seq UInt64,
    at DateTime,
    at_ms UInt64,
    trigger String,
    reason String,
    message_id String,
    definition_version UInt32,
    email String,
    phone String,
    esp_subscriber_id String,
    user_id String,
    crm_id String,
    loyalty_card String,
    emitted_at DateTime,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(at)
ORDER BY (segment_id, subject, person_id, seq);

-- Every published version of every definition (omniseg segments apply); deleted = 1 is a removal.
CREATE TABLE IF NOT EXISTS segment_definitions
(
    segment_id String,
    version UInt32,
    deleted UInt8,
    kind String,
    personalised UInt8,
    definition String,
    hash String,
    source String,
    applied_at DateTime,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (segment_id, version);

-- Current membership: the memberships whose newest change is an enter, with the contacts it carried.
CREATE VIEW IF NOT EXISTS segment_membership_current AS
SELECT
    segment_id,
    subject,
    person_id,
    max_seq AS seq,
    since,
    definition_version,
    email,
    phone,
    esp_subscriber_id,
    user_id,
    crm_id,
    loyalty_card
FROM
(
    SELECT
        segment_id,
        subject,
        person_id,
        max(seq) AS max_seq,
        argMax(at, seq) AS since,
        argMax(definition_version, seq) AS definition_version,
        argMax(email, seq) AS email,
        argMax(phone, seq) AS phone,
        argMax(esp_subscriber_id, seq) AS esp_subscriber_id,
        argMax(user_id, seq) AS user_id,
        argMax(crm_id, seq) AS crm_id,
        argMax(loyalty_card, seq) AS loyalty_card
    FROM segment_changes
    GROUP BY segment_id, subject, person_id
)
WHERE max_seq % 2 = 1;

-- Membership spells: one row per enter, with the exit that ended it (exited_at = 0 while still a
-- member). "Members at time t": entered_at <= t AND (exited_at = 0 OR exited_at > t).
CREATE VIEW IF NOT EXISTS segment_membership_intervals AS
SELECT
    segment_id,
    subject,
    person_id,
    spell,
    entered_at,
    exited_at
FROM
(
    SELECT
        segment_id,
        subject,
        person_id,
        intDiv(toUInt64(seq) + 1, 2) AS spell,
        minIf(at, seq % 2 = 1) AS entered_at,
        maxIf(at, seq % 2 = 0) AS exited_at,
        countIf(seq % 2 = 1) AS enters
    FROM segment_changes
    GROUP BY segment_id, subject, person_id, spell
)
WHERE enters > 0;
