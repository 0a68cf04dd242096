-- Orders, returns and net revenue per channel from the product lines (web SKU, app id, store EAN).
SELECT
    channel,
    countIf(event = 'Order Completed') AS orders,
    countIf(event IN ('Order Refunded', 'Product Returned')) AS returns,
    round(sumIf(arraySum(arrayMap((q, p) -> q * ifNull(p, 0), line_quantity, line_unit_price)),
        event = 'Order Completed'), 2) AS gross_revenue,
    round(sumIf(arraySum(arrayMap((q, p) -> q * ifNull(p, 0), line_quantity, line_unit_price)),
        event IN ('Order Refunded', 'Product Returned')), 2) AS returned_value
FROM events_dedup
GROUP BY channel
ORDER BY channel
