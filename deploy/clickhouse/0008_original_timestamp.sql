-- Event time corrected for the client's clock (docs/decisions/0003-event-time.md): `timestamp` and
-- `timestamp_ms` are when the event happened, corrected at the collector as Segment does
-- (receivedAt - (sentAt - originalTimestamp)); original_timestamp_ms keeps the client's reading as sent.
-- Rows written before this migration were never corrected: their original is their timestamp.
ALTER TABLE events ADD COLUMN original_timestamp_ms UInt64 DEFAULT timestamp_ms AFTER sent_at_ms;

-- A view keeps the columns it had when it was created; create events_dedup again to show the new one.
DROP TABLE IF EXISTS events_dedup;

CREATE VIEW IF NOT EXISTS events_dedup AS
SELECT *
FROM events
FINAL;
