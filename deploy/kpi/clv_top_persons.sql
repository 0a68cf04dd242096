-- Customer lifetime value per person: the 100 most valuable persons, their orders and order dates
--
-- The 100 persons with the highest net revenue over their whole history (orders minus returns, the one
-- revenue definition, every channel, ids merged into them included: events_by_person).
--   clv                       net revenue
--   orders, returns           Order Completed; Order Refunded and Product Returned events
--   first_order, last_order   event time of the first and the last Order Completed
-- Persons with at least one order. For one person: omniseg person show <identifier>. For everyone,
-- drop the LIMIT. Per segment: clv_by_segment.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    person_id,
    round(sum(revenue), 2) AS clv,
    countIf(event = 'Order Completed') AS orders,
    countIf(event IN ('Order Refunded', 'Product Returned')) AS returns,
    minIf(timestamp, event = 'Order Completed') AS first_order,
    maxIf(timestamp, event = 'Order Completed') AS last_order
FROM events_by_person
GROUP BY person_id
HAVING orders > 0
ORDER BY clv DESC, person_id
LIMIT 100
