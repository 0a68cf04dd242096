-- Average order value (AOV) per channel and overall, and the average cart value at checkout
--
--   orders, order_value, aov   Order Completed events (resolved: event_persons), the value of the
--                              orders (the one revenue definition: properties.revenue, else
--                              properties.total, else the lines' total; event_persons.revenue), and
--                              order_value / orders
--   checkouts                  Checkout Started events (Segment e-commerce spec; events_dedup, so
--                              anonymous carts count too): carts that reached the checkout, bought or not
--   valued_checkouts           of those, the ones that carry the cart's value: properties.value, else
--                              properties.revenue (read with visitParamExtract*: the first key of that
--                              name at any depth, a plain number)
--   avg_checkout_value         the mean of that value over valued_checkouts (NULL when none carries it)
-- The row channel = 'any' is across channels. Amounts are in the shop's currencies, not converted.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel,
    orders,
    round(order_value, 2) AS order_value,
    round(order_value / greatest(orders, 1), 2) AS aov,
    checkouts,
    valued_checkouts,
    if(valued_checkouts = 0, NULL, round(checkout_value / valued_checkouts, 2)) AS avg_checkout_value
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
    SELECT channel_name AS channel, count() AS checkouts, countIf(valued) AS valued_checkouts,
        sumIf(cart_value, valued) AS checkout_value
    FROM
    (
        SELECT
            toString(channel) AS channel_name,
            visitParamHas(properties, 'value') OR visitParamHas(properties, 'revenue') AS valued,
            if(visitParamHas(properties, 'value'), visitParamExtractFloat(properties, 'value'),
                visitParamExtractFloat(properties, 'revenue')) AS cart_value
        FROM events_dedup
        WHERE event = 'Checkout Started'
    )
    GROUP BY channel_name
    UNION ALL
    SELECT 'any' AS channel, count() AS checkouts, countIf(valued) AS valued_checkouts,
        sumIf(cart_value, valued) AS checkout_value
    FROM
    (
        SELECT
            visitParamHas(properties, 'value') OR visitParamHas(properties, 'revenue') AS valued,
            if(visitParamHas(properties, 'value'), visitParamExtractFloat(properties, 'value'),
                visitParamExtractFloat(properties, 'revenue')) AS cart_value
        FROM events_dedup
        WHERE event = 'Checkout Started'
    )
) AS carts USING channel
ORDER BY channel = 'any', channel
