-- Average order value per channel and across channels: orders, their value and its mean, and the
-- value of the carts that reached the checkout.
--   orders, order_value, aov     Order Completed events, the value of the orders (the one revenue
--                                definition: properties.revenue, else properties.total, else the lines'
--                                total; event_persons.revenue), order_value / orders
--   checkouts, avg_checkout_value  Checkout Started events (Segment e-commerce spec) and the mean of
--                                their properties.value, else properties.revenue (carts that were not
--                                necessarily bought; 0 when the event carries neither)
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel,
    orders,
    round(order_value, 2) AS order_value,
    round(order_value / greatest(orders, 1), 2) AS aov,
    checkouts,
    round(checkout_value / greatest(checkouts, 1), 2) AS avg_checkout_value
FROM
(
    SELECT
        toString(channel) AS channel,
        countIf(event = 'Order Completed') AS orders,
        sumIf(revenue, event = 'Order Completed') AS order_value
    FROM event_persons FINAL
    GROUP BY channel
    UNION ALL
    SELECT
        'any' AS channel,
        countIf(event = 'Order Completed') AS orders,
        sumIf(revenue, event = 'Order Completed') AS order_value
    FROM event_persons FINAL
) AS placed
ANY LEFT JOIN
(
    SELECT
        toString(channel) AS channel,
        count() AS checkouts,
        sum(if(visitParamHas(properties, 'value'), visitParamExtractFloat(properties, 'value'),
            visitParamExtractFloat(properties, 'revenue'))) AS checkout_value
    FROM events_dedup
    WHERE event = 'Checkout Started'
    GROUP BY channel
    UNION ALL
    SELECT
        'any' AS channel,
        count() AS checkouts,
        sum(if(visitParamHas(properties, 'value'), visitParamExtractFloat(properties, 'value'),
            visitParamExtractFloat(properties, 'revenue'))) AS checkout_value
    FROM events_dedup
    WHERE event = 'Checkout Started'
) AS carts USING channel
ORDER BY channel = 'any', channel
