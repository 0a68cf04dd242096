-- Exact reads over at-least-once delivery: one row per (channel, day, message_id), whether or not
-- background merges have run yet. Analysts query this view, not the raw table.
CREATE VIEW IF NOT EXISTS events_dedup AS
SELECT *
FROM events
FINAL;
