-- Repeat visits (2+ days) and repeat purchases (2+ orders) in persons, per channel and overall
--
-- Repeat visits and repeat purchases per channel and across channels, in persons (after every merge,
-- person_history): persons who visited (a page or screen view) and those who came back on another
-- day; persons who bought and those who bought again (two or more Order Completed).
--   visitors, repeat_visitors, repeat_visit_pct      visits on two or more distinct days (server time
--                                                    zone, UTC by default)
--   buyers, repeat_buyers, repeat_purchase_pct       two or more orders
-- person_history (0013) has one row per person, day and channel: the resolved events, each once, and
-- the days whose raw events retention removed from their rollup (docs/retention.md).
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel_name AS channel,
    countIf(visit_days >= 1) AS visitors,
    countIf(visit_days >= 2) AS repeat_visitors,
    round(100 * countIf(visit_days >= 2) / greatest(countIf(visit_days >= 1), 1), 1) AS repeat_visit_pct,
    countIf(person_orders >= 1) AS buyers,
    countIf(person_orders >= 2) AS repeat_buyers,
    round(100 * countIf(person_orders >= 2) / greatest(countIf(person_orders >= 1), 1), 1) AS repeat_purchase_pct
FROM
(
    SELECT
        toString(channel) AS channel_name,
        person_id,
        uniqExactIf(day, visits > 0) AS visit_days,
        sum(orders) AS person_orders
    FROM person_history
    GROUP BY channel_name, person_id
    UNION ALL
    SELECT
        'any' AS channel_name,
        person_id,
        uniqExactIf(day, visits > 0) AS visit_days,
        sum(orders) AS person_orders
    FROM person_history
    GROUP BY person_id
)
GROUP BY channel_name
ORDER BY channel_name = 'any', channel_name
