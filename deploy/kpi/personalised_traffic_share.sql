-- Share of traffic that falls in personalised segments, per day and channel: events whose person was
-- a member of at least one segment flagged personalised: true (its newest live definition; kind
-- 'segment', so suppression audiences do not count) at the event's timestamp.
--   person     the person the event resolved to when it happened (event_persons, like the segment
--              stage saw it); a person merged since exited its segments at the merge, so its spells
--              end there and the events it sent before still count as they were.
--   member at  entered_at <= timestamp and (still a member, or exited_at > timestamp), in seconds; the
--              event that made the person enter counts when the entry has the same second.
-- Traffic is resolved traffic (event_persons, deduplicated), like identity_identified_share.
-- Runs on ClickHouse 18.16 and current ClickHouse (no ASOF JOIN: each person's spells are joined as
-- arrays). Filter days with: WHERE day >= today() - 7.
SELECT
    day,
    channel,
    count() AS events,
    countIf(personalised) AS personalised_events,
    round(personalised_events / events, 4) AS personalised_share,
    uniqExact(person_id) AS persons,
    uniqExactIf(person_id, personalised) AS personalised_persons
FROM
(
    SELECT
        toDate(timestamp) AS day,
        toString(channel) AS channel,
        person_id,
        arrayExists(
            (entered, exited) -> entered <= timestamp AND (toUInt32(exited) = 0 OR exited > timestamp),
            spell_entered,
            spell_exited
        ) AS personalised
    FROM
    (
        SELECT person_id, channel, timestamp FROM event_persons FINAL
    ) AS traffic
    ANY LEFT JOIN
    (
        SELECT
            person_id,
            groupArray(entered_at) AS spell_entered,
            groupArray(exited_at) AS spell_exited
        FROM segment_membership_intervals
        WHERE subject = '' AND segment_id IN
        (
            SELECT segment_id
            FROM
            (
                SELECT
                    segment_id,
                    argMaxIf(kind, version, deleted = 0) AS live_kind,
                    argMaxIf(personalised, version, deleted = 0) AS live_personalised
                FROM segment_definitions
                GROUP BY segment_id
            )
            WHERE live_kind = 'segment' AND live_personalised = 1
        )
        GROUP BY person_id
    ) AS spells USING person_id
)
GROUP BY day, channel
ORDER BY day, channel
