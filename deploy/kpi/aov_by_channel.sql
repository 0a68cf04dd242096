-- Average order value (AOV) per channel and overall, and the average cart value at checkout
--
--   orders, order_value, aov   Order Completed events (resolved), the value of the orders (the one
--                              revenue definition: properties.revenue, else properties.total, else the
--                              lines' total; event_persons.revenue), and order_value / orders
--   checkouts                  Checkout Started events (Segment e-commerce spec; resolved or not, so
--                              anonymous carts count too): carts that reached the checkout, bought or not
--   valued_checkouts           of those, the ones that carry the cart's value: properties.value, else
--                              properties.revenue (read with visitParamExtract*: the first key of that
--                              name at any depth, a plain number)
--   avg_checkout_value         the mean of that value over valued_checkouts (NULL when none carries it)
-- Reads person_history and checkout_history (0013): each event once, and the days whose raw events
-- retention removed from their rollups (docs/retention.md).
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
    SELECT toString(channel) AS channel, sum(day_orders) AS orders, sum(day_order_value) AS order_value
    FROM (SELECT channel, orders AS day_orders, order_value AS day_order_value FROM person_history)
    GROUP BY channel
    UNION ALL
    SELECT 'any' AS channel, sum(day_orders) AS orders, sum(day_order_value) AS order_value
    FROM (SELECT orders AS day_orders, order_value AS day_order_value FROM person_history)
) AS placed
ANY LEFT JOIN
(
    SELECT
        toString(channel) AS channel,
        sum(day_checkouts) AS checkouts,
        sum(day_valued) AS valued_checkouts,
        sum(day_value) AS checkout_value
    FROM
    (
        SELECT channel, checkouts AS day_checkouts, valued_checkouts AS day_valued,
            checkout_value AS day_value
        FROM checkout_history
    )
    GROUP BY channel
    UNION ALL
    SELECT
        'any' AS channel,
        sum(day_checkouts) AS checkouts,
        sum(day_valued) AS valued_checkouts,
        sum(day_value) AS checkout_value
    FROM
    (
        SELECT checkouts AS day_checkouts, valued_checkouts AS day_valued, checkout_value AS day_value
        FROM checkout_history
    )
) AS carts USING channel
ORDER BY channel = 'any', channel
