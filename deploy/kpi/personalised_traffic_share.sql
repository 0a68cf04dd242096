-- Share of traffic in personalised segments: per day and channel, the events whose person was a member
-- of at least one segment marked personalised (the definition's `personalised`, default true) at the
-- moment of the event. The person is the one the event resolved to (event_persons): memberships are
-- recorded under that id until a merge moves them to the survivor.
-- Runs on ClickHouse 18.16 and current ClickHouse (no ASOF JOIN: each event meets its person's spells).
SELECT
    day,
    channel,
    count() AS events,
    sum(in_segment) AS events_in_personalised_segments,
    round(if(events = 0, 0, events_in_personalised_segments / events), 4) AS personalised_share
FROM
(
    SELECT
        message_id,
        any(day) AS day,
        any(channel) AS channel,
        max(has_spell = 1 AND entered_at <= ts AND (exited_at = toDateTime(0) OR exited_at > ts)) AS in_segment
    FROM
    (
        SELECT message_id, toDate(timestamp) AS day, toString(channel) AS channel, timestamp AS ts, person_id
        FROM events_dedup
        ALL INNER JOIN
        (
            SELECT message_id, any(person_id) AS person_id
            FROM event_persons
            GROUP BY message_id
        ) AS resolved USING message_id
    ) AS visits
    ALL LEFT JOIN
    (
        SELECT person_id, entered_at, exited_at, toUInt8(1) AS has_spell
        FROM segment_membership_intervals
        WHERE segment_id IN
        (
            SELECT segment_id
            FROM
            (
                SELECT segment_id, argMax(personalised, version) AS personalised, argMax(deleted, version) AS removed
                FROM segment_definitions
                GROUP BY segment_id
            )
            WHERE personalised = 1 AND removed = 0
        )
    ) AS spells USING person_id
    GROUP BY message_id
)
GROUP BY day, channel
ORDER BY day, channel
