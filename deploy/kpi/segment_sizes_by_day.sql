-- Members of every segment and audience at the end of each day, with entries and exits
--
-- Members of every segment and audience at the end of each day (server time zone, UTC by default),
-- from the segment's first change to today. members counts memberships: persons for a segment, (person,
-- product or category) pairs for a suppression audience. A removed segment shows 0 after its members
-- exited. Filter days with: WHERE day BETWEEN '2026-01-01' AND '2026-01-31' (or day >= today() - 30).
--
-- Computed from the changes rather than by testing every spell against every day: each day's net
-- change (enters - exits; replayed copies counted once) summed over the days up to it. No window
-- functions (ClickHouse 18.16); runs on current ClickHouse too.
SELECT
    segment_id,
    day,
    toUInt64(arraySum(arrayFilter((delta, change_day) -> change_day <= day, deltas, change_days))) AS members,
    toUInt64(arraySum(arrayFilter((n, change_day) -> change_day = day, enters, change_days))) AS entered,
    toUInt64(arraySum(arrayFilter((n, change_day) -> change_day = day, exits, change_days))) AS exited
FROM
(
    SELECT
        segment_id,
        groupArray(change_day) AS change_days,
        groupArray(day_delta) AS deltas,
        groupArray(day_enters) AS enters,
        groupArray(day_exits) AS exits,
        min(change_day) AS first_day
    FROM
    (
        SELECT
            segment_id,
            change_day,
            toInt64(countIf(change_kind = 'entered')) - toInt64(countIf(change_kind = 'exited')) AS day_delta,
            countIf(change_kind = 'entered') AS day_enters,
            countIf(change_kind = 'exited') AS day_exits
        FROM
        (
            -- One row per change: a replayed copy has the same key but maybe another `at` (a
            -- re-evaluation), even in another month's partition, where FINAL would not meet it.
            SELECT segment_id, toDate(min(at)) AS change_day, any(change) AS change_kind
            FROM segment_changes
            GROUP BY segment_id, subject, person_id, seq
        )
        GROUP BY segment_id, change_day
    )
    GROUP BY segment_id
)
ARRAY JOIN
    arrayMap(offset -> first_day + offset, range(toUInt32(greatest(today(), first_day) - first_day + 1))) AS day
ORDER BY segment_id, day
