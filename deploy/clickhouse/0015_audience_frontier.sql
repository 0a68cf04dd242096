-- The pull API's frontier (cursor c: every delta at an offset < c is in ClickHouse), kept by the
-- audiences sink instead of read as max(kafka_offset) of audience_deltas, which scanned that column on
-- every request and moved back when an erasure deleted the newest rows. After each batch's inserts into
-- audience_members and then audience_deltas, the sink inserts the batch's largest offset + 1 here, so a
-- reader that sees a frontier finds every row below it in both tables. Readers take max(frontier);
-- merges keep one row.
CREATE TABLE IF NOT EXISTS audience_frontier
(
    frontier UInt64,
    at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(frontier)
ORDER BY tuple();

-- The frontier of what is already there. A sink of the previous version still running writes no
-- frontier rows: until the new one runs the frontier stays behind, which is safe (a lower frontier only
-- means the pull API's tail, or the next batch, serves those offsets).
INSERT INTO audience_frontier (frontier)
SELECT largest + 1
FROM (SELECT count() AS written, max(kafka_offset) AS largest FROM audience_deltas)
WHERE written > 0;
