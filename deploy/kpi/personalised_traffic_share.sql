-- Share of traffic from persons in personalised segments, per day and channel
--
-- Share of traffic that falls in personalised segments, per day and channel: events whose person was
-- a member of at least one segment flagged personalised: true (its newest live definition; kind
-- 'segment', so suppression audiences do not count) at the event's timestamp.
-- Clocks: an event counts at its event time (`timestamp`, when the shopper did it); a membership spell
-- runs from the evaluation time at which the segment stage entered the person to the one at which it
-- exited them (segment_changes.at). Events from before those segments were first applied
-- (segment_definitions.applied_at, `live_from`) cannot have been personalised: they count in `events`
-- but not in `live_events`, `personalised_share` is of `live_events` (NULL with none), and `note` says
-- "before segments were live" instead of showing a share of 0. A history sent after the segments went
-- live is evaluated when it arrives, so its spells start after its events: it is traffic from before
-- the segments were live too, and only traffic that arrives while they are live can be personalised.
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
    events,
    live_events,
    personalised_events,
    if(live_events = 0, NULL, round(personalised_events / live_events, 4)) AS personalised_share,
    persons,
    personalised_persons,
    multiIf(
        toUInt32(live_from) = 0, 'no personalised segment defined',
        live_events = 0, 'before segments were live',
        live_events < events, concat('segments live from ', toString(live_from)),
        ''
    ) AS note
FROM
(
    SELECT
        day,
        channel,
        count() AS events,
        countIf(live) AS live_events,
        countIf(personalised) AS personalised_events,
        uniqExact(person_id) AS persons,
        uniqExactIf(person_id, personalised) AS personalised_persons,
        any(live_since) AS live_from
    FROM
    (
        SELECT
            toDate(timestamp) AS day,
            toString(channel) AS channel,
            person_id,
            live_since,
            toUInt32(live_since) > 0 AND timestamp >= live_since AS live,
            arrayExists(
                (entered, exited) -> entered <= timestamp AND (toUInt32(exited) = 0 OR exited > timestamp),
                spell_entered,
                spell_exited
            ) AS personalised
        FROM
        (
            SELECT
                person_id,
                channel,
                timestamp,
                (
                    SELECT min(applied_at)
                    FROM segment_definitions
                    WHERE segment_id IN
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
                ) AS live_since
            FROM event_persons
            FINAL
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
)
ORDER BY day, channel
