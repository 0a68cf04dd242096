-- Shopping funnel per channel within one day: viewed -> added to cart -> ordered, per source id.
-- windowFunnel counts how far each shopper got, in order, within the window (86400 s).
SELECT
    channel,
    countIf(step >= 1) AS viewed,
    countIf(step >= 2) AS added,
    countIf(step >= 3) AS ordered,
    round(100 * countIf(step >= 3) / greatest(countIf(step >= 1), 1), 1) AS view_to_order_pct
FROM
(
    SELECT
        channel,
        if(user_id != '', user_id, if(anonymous_id != '', anonymous_id, device_id)) AS shopper,
        windowFunnel(86400)(timestamp, event = 'Product Viewed', event = 'Product Added',
            event = 'Order Completed') AS step
    FROM events_dedup
    WHERE channel IN ('web', 'app')
    GROUP BY channel, shopper
)
GROUP BY channel
ORDER BY channel
