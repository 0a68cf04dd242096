-- Returns per channel and overall: returns, return rate and share of order value returned
--
-- Returns per channel and across channels: how many orders came back and how much of their value.
--   orders             Order Completed events
--   returns            Order Refunded and Product Returned events
--   return_rate_pct    returns per 100 orders (a return in the store of a web order counts in 'store':
--                      it is the channel where the return happened)
--   order_value, returned_value, returned_value_pct   the value of the orders, of the returns (the one
--                      revenue definition, event_persons.revenue), and the share of value returned
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel_name AS channel,
    countIf(event = 'Order Completed') AS orders,
    countIf(event IN ('Order Refunded', 'Product Returned')) AS returns,
    round(100 * countIf(event IN ('Order Refunded', 'Product Returned'))
        / greatest(countIf(event = 'Order Completed'), 1), 1) AS return_rate_pct,
    round(sumIf(revenue, event = 'Order Completed'), 2) AS order_value,
    round(-sumIf(revenue, event IN ('Order Refunded', 'Product Returned')), 2) AS returned_value,
    round(100 * -sumIf(revenue, event IN ('Order Refunded', 'Product Returned'))
        / greatest(sumIf(revenue, event = 'Order Completed'), 0.01), 1) AS returned_value_pct
FROM
(
    SELECT toString(channel) AS channel_name, event, revenue FROM event_persons FINAL
    UNION ALL
    SELECT 'any' AS channel_name, event, revenue FROM event_persons FINAL
)
GROUP BY channel_name
ORDER BY channel_name = 'any', channel_name
