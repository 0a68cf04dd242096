-- Scroll rate on product list pages: share of list viewers who scrolled a list to 50 %+, per day and channel
--
-- Of the persons who viewed a product list on a day and channel, the share who scrolled one of the lists
-- they viewed that day to at least half its length.
-- Events read (events_dedup for the properties, joined on (channel, message_id) to events_by_person for
-- the person after every merge: a cookie merged into a login since counts as that person):
--   Product List Viewed     the Segment e-commerce spec's event for a category or search result page
--                           (properties.list_id, properties.category)
--   Product List Scrolled   not in the spec; omniseg's convention for the list page's scroll tracking:
--                           properties.list_id (the list scrolled) and properties.depth, the deepest
--                           point reached as a percentage of the list's height (a number 0-100). Send it
--                           once per list view with the deepest depth, or on each threshold (25, 50, 75,
--                           100): the deepest counts.
-- Properties are read with visitParamExtract* (ClickHouse 18.16 has no JSONExtract): the first key of
-- that name at any depth, in compact JSON as the collector writes it; list_id is compared as sent
-- (visitParamExtractRaw: "L1" and 17 both work, as long as views and scrolls send the same).
--   viewers      persons with a Product List Viewed that day and channel
--   scrollers    of those, persons with a Product List Scrolled of depth >= 50 on the same day and
--                channel whose list_id is one they viewed (views and scrolls without a list_id match
--                each other)
--   scroll_pct   100 * scrollers / viewers
-- Days are in the server's time zone (UTC by default). Resolved events only.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    day,
    channel_name AS channel,
    count() AS viewers,
    countIf(scrolled) AS scrollers,
    round(100 * countIf(scrolled) / greatest(count(), 1), 1) AS scroll_pct
FROM
(
    SELECT
        day,
        channel_name,
        person_id,
        groupUniqArrayIf(list_id, event = 'Product List Viewed') AS viewed_lists,
        groupUniqArrayIf(list_id, event = 'Product List Scrolled' AND depth >= 50) AS deep_lists,
        hasAny(viewed_lists, deep_lists) AS scrolled
    FROM
    (
        SELECT toDate(timestamp) AS day, toString(channel) AS channel_name, person_id, event, list_id, depth
        FROM
        (
            SELECT channel, message_id, person_id
            FROM events_by_person
            WHERE event IN ('Product List Viewed', 'Product List Scrolled')
        ) AS persons
        ALL INNER JOIN
        (
            SELECT
                channel,
                message_id,
                timestamp,
                event,
                visitParamExtractRaw(properties, 'list_id') AS list_id,
                visitParamExtractFloat(properties, 'depth') AS depth
            FROM events_dedup
            WHERE event IN ('Product List Viewed', 'Product List Scrolled')
        ) AS lists USING (channel, message_id)
    )
    GROUP BY day, channel_name, person_id
    HAVING length(viewed_lists) > 0
)
GROUP BY day, channel_name
ORDER BY day, channel_name
