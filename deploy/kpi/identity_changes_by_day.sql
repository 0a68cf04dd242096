-- Identity decisions per day (by the triggering event's time): merges (each one folds a person into an
-- older one), identifiers moved by them, and refused links by reason ("limit": a new identifier over a
-- per-person limit; "merge_limit": a merge that would break a limit). Deduplicated by change_id.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    day,
    sum(merge) AS merges,
    sum(moved) AS identifiers_moved,
    sum(rejection) AS rejections,
    sum(limit_rejection) AS limit_rejections,
    sum(merge_limit_rejection) AS merge_limit_rejections
FROM
(
    SELECT
        toDate(at) AS day,
        toUInt64(1) AS merge,
        toUInt64(length(identifiers)) AS moved,
        toUInt64(0) AS rejection,
        toUInt64(0) AS limit_rejection,
        toUInt64(0) AS merge_limit_rejection
    FROM identity_merges
    FINAL
    UNION ALL
    SELECT
        toDate(at) AS day,
        toUInt64(0) AS merge,
        toUInt64(0) AS moved,
        toUInt64(1) AS rejection,
        toUInt64(reason = 'limit') AS limit_rejection,
        toUInt64(reason = 'merge_limit') AS merge_limit_rejection
    FROM identity_rejections
    FINAL
)
GROUP BY day
ORDER BY day
