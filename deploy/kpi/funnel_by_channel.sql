-- Shopping funnel per channel in persons: viewed, added to cart, ordered, step-to-step click-through
--
-- Shopping funnel in persons: how many persons viewed a product, then added one to the cart, then
-- completed an order, in that order within one day (windowFunnel, 86400 s), per channel (web, app) and
-- across every channel (channel 'any': viewed on the phone, bought on the laptop or in store).
-- A person is the resolved customer after every merge (events_by_person.person_id): a shopper's
-- cookies, app installs and logins count once. (Counting cookie or device ids would count one customer
-- with two browsers twice, and miss the order placed after a login.)
-- Click-through to the next step: view_to_cart_pct (of those who viewed, the share who then added to
-- the cart) and cart_to_order_pct (of those who added, the share who then ordered); view_to_order_pct
-- is the whole funnel.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel_name AS channel,
    countIf(step >= 1) AS persons_viewed,
    countIf(step >= 2) AS persons_added,
    countIf(step >= 3) AS persons_ordered,
    round(100 * countIf(step >= 3) / greatest(countIf(step >= 1), 1), 1) AS view_to_order_pct,
    round(100 * countIf(step >= 2) / greatest(countIf(step >= 1), 1), 1) AS view_to_cart_pct,
    round(100 * countIf(step >= 3) / greatest(countIf(step >= 2), 1), 1) AS cart_to_order_pct
FROM
(
    SELECT
        toString(channel) AS channel_name,
        person_id,
        windowFunnel(86400)(timestamp, event = 'Product Viewed', event = 'Product Added',
            event = 'Order Completed') AS step
    FROM events_by_person
    WHERE channel IN ('web', 'app')
    GROUP BY channel_name, person_id
    UNION ALL
    SELECT
        'any' AS channel_name,
        person_id,
        windowFunnel(86400)(timestamp, event = 'Product Viewed', event = 'Product Added',
            event = 'Order Completed') AS step
    FROM events_by_person
    GROUP BY person_id
)
GROUP BY channel_name
ORDER BY channel_name = 'any', channel_name
