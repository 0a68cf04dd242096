-- Scroll rate on product list pages, per day and channel: of the persons who viewed a product list,
-- the share who scrolled one of the lists they viewed to at least half its length.
-- Events read (events_dedup, each with the person it resolved to in event_persons):
--   Product List Viewed     the Segment e-commerce spec's event for a category or search result page
--                           (properties.list_id, properties.category)
--   Product List Scrolled   not in the spec; omniseg's convention for the list page's scroll tracking:
--                           properties.list_id (the list scrolled) and properties.depth, the deepest
--                           point reached as a percentage of the list's height (0-100). Send it once per
--                           list view with the deepest depth, or on each threshold: the deepest counts.
-- A person counts once per day and channel: viewers, scrollers (depth >= 50 on a list with the same
-- list_id as one they viewed that day; views and scrolls without a list_id match each other) and
-- scroll_pct.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    day,
    channel_name AS channel,
    uniqExact(person) AS viewers,
    uniqExactIf(person, scrolled) AS scrollers,
    round(100 * uniqExactIf(person, scrolled) / greatest(uniqExact(person), 1), 1) AS scroll_pct
FROM
(
    SELECT
        day,
        channel_name,
        person,
        list_id,
        (person, day, channel_name, list_id) IN
        (
            SELECT person, day, channel_name, list_id
            FROM
            (
                SELECT
                    toDate(timestamp) AS day,
                    toString(channel) AS channel_name,
                    message_id,
                    visitParamExtractString(properties, 'list_id') AS list_id,
                    visitParamExtractFloat(properties, 'depth') AS depth
                FROM events_dedup
                WHERE event = 'Product List Scrolled'
            ) AS scrolls
            ALL INNER JOIN
            (
                SELECT message_id, argMax(person_id, resolved_at_ms) AS person
                FROM event_persons
                GROUP BY message_id
            ) AS resolved USING message_id
            WHERE depth >= 50
        ) AS scrolled
    FROM
    (
        SELECT
            toDate(timestamp) AS day,
            toString(channel) AS channel_name,
            message_id,
            visitParamExtractString(properties, 'list_id') AS list_id
        FROM events_dedup
        WHERE event = 'Product List Viewed'
    ) AS views
    ALL INNER JOIN
    (
        SELECT message_id, argMax(person_id, resolved_at_ms) AS person
        FROM event_persons
        GROUP BY message_id
    ) AS resolved USING message_id
)
GROUP BY day, channel_name
ORDER BY day, channel_name
