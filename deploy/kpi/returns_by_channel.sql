-- Returns per channel and overall: returns, return rate and share of order value returned
--
-- Returns per channel and across channels: how many orders came back and how much of their value.
--   orders             Order Completed events
--   returns            Order Refunded and Product Returned events
--   return_rate_pct    returns per 100 orders (a return in the store of a web order counts in 'store':
--                      it is the channel where the return happened)
--   order_value, returned_value, returned_value_pct   the value of the orders, of the returns (the one
--                      revenue definition, event_persons.revenue), and the share of value returned
-- Reads person_history (0013): resolved events, each once, and the days whose raw events retention
-- removed from their rollup (docs/retention.md).
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel_name AS channel,
    sum(day_orders) AS orders,
    sum(day_returns) AS returns,
    round(100 * sum(day_returns) / greatest(sum(day_orders), 1), 1) AS return_rate_pct,
    round(sum(day_order_value), 2) AS order_value,
    round(sum(day_returned_value), 2) AS returned_value,
    round(100 * sum(day_returned_value) / greatest(sum(day_order_value), 0.01), 1) AS returned_value_pct
FROM
(
    -- New names for the columns that are summed: an alias equal to a column name replaces it everywhere.
    SELECT
        toString(channel) AS channel_name,
        orders AS day_orders,
        returns AS day_returns,
        order_value AS day_order_value,
        returned_value AS day_returned_value
    FROM person_history
    UNION ALL
    SELECT
        'any' AS channel_name,
        orders AS day_orders,
        returns AS day_returns,
        order_value AS day_order_value,
        returned_value AS day_returned_value
    FROM person_history
)
GROUP BY channel_name
ORDER BY channel_name = 'any', channel_name
