-- Events per channel: total, distinct event names, distinct source ids, first and last event
--
-- Events per channel: total, distinct event names, people-ish reach (distinct cookies/devices/cards).
-- Runs on ClickHouse 18.16 and current ClickHouse. Table names resolve in the omniseg database.
SELECT
    channel,
    count() AS events,
    uniqExact(event) AS event_names,
    uniqExact(if(user_id != '', user_id, if(anonymous_id != '', anonymous_id,
        if(device_id != '', device_id, if(loyalty_card != '', loyalty_card, email))))) AS source_ids,
    min(timestamp) AS first_event,
    max(timestamp) AS last_event
FROM events_dedup
GROUP BY channel
ORDER BY channel
