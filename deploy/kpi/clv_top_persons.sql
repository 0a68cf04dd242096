-- Customer lifetime value per person: the 100 most valuable persons, their orders and order dates
--
-- The 100 persons with the highest net revenue over their whole history (orders minus returns, the one
-- revenue definition, every channel, ids merged into them included).
--   clv                       net revenue
--   orders, returns           Order Completed; Order Refunded and Product Returned events
--   first_order, last_order   event time of the first and the last Order Completed
-- Reads person_history (0013): resolved events under their canonical person, each once, and the days
-- whose raw events retention removed from their rollup (docs/retention.md).
-- Persons with at least one order. For one person: omniseg person show <identifier>. For everyone,
-- drop the LIMIT. Per segment: clv_by_segment.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    person_id,
    round(sum(day_revenue), 2) AS clv,
    sum(day_orders) AS orders,
    sum(day_returns) AS returns,
    minIf(first_order_at, day_orders > 0) AS first_order,
    maxIf(last_order_at, day_orders > 0) AS last_order
FROM
(
    -- New names for the columns that are summed: an alias equal to a column name replaces it everywhere.
    SELECT person_id, revenue AS day_revenue, orders AS day_orders, returns AS day_returns, first_order_at,
        last_order_at
    FROM person_history
)
GROUP BY person_id
HAVING orders > 0
ORDER BY clv DESC, person_id
LIMIT 100
