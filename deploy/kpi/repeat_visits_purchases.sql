-- Repeat visits (2+ days) and repeat purchases (2+ orders) in persons, per channel and overall
--
-- Repeat visits and repeat purchases per channel and across channels, in persons (after every merge,
-- events_by_person): persons who visited (a page or screen view) and those who came back on another
-- day; persons who bought and those who bought again (two or more Order Completed).
--   visitors, repeat_visitors, repeat_visit_pct      visits on two or more distinct days (server time
--                                                    zone, UTC by default)
--   buyers, repeat_buyers, repeat_purchase_pct       two or more orders
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel_name AS channel,
    countIf(visit_days >= 1) AS visitors,
    countIf(visit_days >= 2) AS repeat_visitors,
    round(100 * countIf(visit_days >= 2) / greatest(countIf(visit_days >= 1), 1), 1) AS repeat_visit_pct,
    countIf(orders >= 1) AS buyers,
    countIf(orders >= 2) AS repeat_buyers,
    round(100 * countIf(orders >= 2) / greatest(countIf(orders >= 1), 1), 1) AS repeat_purchase_pct
FROM
(
    SELECT
        toString(channel) AS channel_name,
        person_id,
        uniqExactIf(toDate(timestamp), type IN ('page', 'screen')) AS visit_days,
        countIf(event = 'Order Completed') AS orders
    FROM events_by_person
    GROUP BY channel_name, person_id
    UNION ALL
    SELECT
        'any' AS channel_name,
        person_id,
        uniqExactIf(toDate(timestamp), type IN ('page', 'screen')) AS visit_days,
        countIf(event = 'Order Completed') AS orders
    FROM events_by_person
    GROUP BY person_id
)
GROUP BY channel_name
ORDER BY channel_name = 'any', channel_name
