-- Segment sizes over time: members (distinct persons) of each segment at the end of each of the last
-- 30 days, from the membership spells (segment_membership_intervals). Per-product suppression
-- audiences count a person once, whatever the number of products.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    day,
    segment_id,
    uniqExactIf(
        person_id,
        entered_at < toDateTime(day + 1) AND (exited_at = toDateTime(0) OR exited_at >= toDateTime(day + 1))
    ) AS members
FROM segment_membership_intervals
ARRAY JOIN arrayMap(n -> today() - n, range(30)) AS day
GROUP BY day, segment_id
HAVING members > 0
ORDER BY segment_id, day
