-- Segment backfill runs (docs/backfill.md): one row per run, rewritten as the run goes (the newest
-- updated_at_ms wins; read with FINAL). Written by `omniseg segments backfill` and `omniseg segments
-- apply`; `omniseg segments backfill status` reads it. A run that stopped part-way resumes from
-- pages_done with the same cut (cut_offsets: per events.resolved partition, the first offset not read
-- from history) and the same window start (since_ms).
CREATE TABLE IF NOT EXISTS segment_backfills
(
    run_id String,
    segments Array(String),
    features Array(String),
    status String,
    since_ms UInt64,
    cut_offsets Array(UInt64),
    pages UInt32,
    pages_done UInt32,
    persons UInt64,
    events_read UInt64,
    entries UInt64,
    parts_sent UInt64,
    seconds Float64,
    message String,
    started_at DateTime,
    updated_at_ms UInt64
)
ENGINE = ReplacingMergeTree(updated_at_ms)
ORDER BY run_id;
