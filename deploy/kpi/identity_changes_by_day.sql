-- Identity merges, identifiers moved and refused links per day
--
-- Identity decisions per day of the triggering event's event time (when the shopper did what linked
-- or was refused, e.g. logged in on a new device): merges (each one folds a person into an older one),
-- identifiers moved by them, and refused links by reason ("limit": a new identifier over a
-- per-person limit; "merge_limit": a merge that would break a limit). Deduplicated by change_id.
-- Clocks: identity_merges.at and identity_rejections.at are received time (when omniseg got the
-- event), so a history imported in one go would all fall on the import day; the event time comes from
-- the triggering event in event_persons (same channel and message_id), and `at` stands in only when
-- that event is not there.
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
        toDate(if(toUInt32(event_time) = 0, at, event_time)) AS day,
        merge,
        moved,
        rejection,
        limit_rejection,
        merge_limit_rejection
    FROM
    (
        SELECT
            message_id,
            channel,
            at,
            toUInt64(1) AS merge,
            toUInt64(length(identifiers)) AS moved,
            toUInt64(0) AS rejection,
            toUInt64(0) AS limit_rejection,
            toUInt64(0) AS merge_limit_rejection
        FROM identity_merges
        FINAL
        UNION ALL
        SELECT
            message_id,
            channel,
            at,
            toUInt64(0) AS merge,
            toUInt64(0) AS moved,
            toUInt64(1) AS rejection,
            toUInt64(reason = 'limit') AS limit_rejection,
            toUInt64(reason = 'merge_limit') AS merge_limit_rejection
        FROM identity_rejections
        FINAL
    ) AS changes
    ANY LEFT JOIN
    (
        SELECT message_id, toString(channel) AS channel, timestamp AS event_time
        FROM event_persons
        FINAL
        WHERE message_id IN (SELECT message_id FROM identity_merges UNION ALL SELECT message_id FROM identity_rejections)
    ) AS triggers USING (message_id, channel)
)
GROUP BY day
ORDER BY day
