-- Share of identified traffic (events and sessions) per day and channel
--
-- Share of identified traffic per day and channel, from events.resolved (events_by_person).
-- identified: the event carried a customer-level identifier (customer_id, crm_id, email,
--   loyalty_card or phone) that resolved to its person.
-- attributed: the event's canonical person has such an identifier today (so anonymous browsing that
--   was later tied to a login or an email counts here, including events from before a merge).
-- session: one browser, app install or device per channel and day: the event's anonymous_id, else its
--   device_id, else (store visits, email clicks without a device) its canonical person. A session is
--   identified (attributed) when at least one of its events is.
-- Runs on ClickHouse 18.16 and current ClickHouse. Filter days with: WHERE day >= today() - 7.
SELECT
    day,
    channel,
    count() AS events,
    countIf(identified) AS identified_events,
    round(identified_events / events, 4) AS identified_share,
    countIf(attributed) AS attributed_events,
    round(attributed_events / events, 4) AS attributed_share,
    uniqExact(session) AS sessions,
    uniqExactIf(session, identified) AS identified_sessions,
    round(identified_sessions / sessions, 4) AS identified_session_share,
    uniqExactIf(session, attributed) AS attributed_sessions,
    round(attributed_sessions / sessions, 4) AS attributed_session_share
FROM
(
    SELECT
        toDate(timestamp) AS day,
        channel,
        arrayExists(x -> match(x, '^(customer_id|crm_id|email|loyalty_card|phone):'), identifiers)
            AS identified,
        person_id IN
        (
            SELECT person_id FROM identities_current
            WHERE kind IN ('customer_id', 'crm_id', 'email', 'loyalty_card', 'phone')
        ) AS attributed,
        arrayFirst(x -> x LIKE 'anonymous_id:%', identifiers) AS anonymous_key,
        arrayFirst(x -> x LIKE 'device_id:%', identifiers) AS device_key,
        multiIf(anonymous_key != '', anonymous_key, device_key != '', device_key, concat('person:', person_id))
            AS session
    FROM events_by_person
)
GROUP BY day, channel
ORDER BY day, channel
