-- Orders, returns and gross, returned and net revenue per channel
--
-- Orders, returns and revenue per channel, in omniseg's one revenue definition, the one segments use
-- (streams/domain/revenue.py, docs/decisions/0001-revenue.md):
--   an event's value is properties.revenue, else properties.total, else its lines' quantity x unit price;
--   its revenue is + the value for Order Completed, - the value for Order Refunded and Product Returned,
--   0 for every other event.
-- The identity sink writes each resolved event's revenue to event_persons.revenue with that code, so
-- this query only sums it. It reads person_history (0013): each event once however often it was
-- delivered, and the days whose raw events retention removed from their rollup (docs/retention.md).
--   orders          Order Completed events
--   returns         Order Refunded and Product Returned events
--   gross_revenue   the value of the orders
--   returned_value  the value of the returns and refunds
--   net_revenue     gross_revenue - returned_value (what sum(revenue) over events_by_person gives)
-- Resolved events only: an event that identity resolution refused (no usable identifier) is in
-- invalid_events instead. Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel,
    sum(day_orders) AS orders,
    sum(day_returns) AS returns,
    round(sum(day_order_value), 2) AS gross_revenue,
    round(sum(day_returned_value), 2) AS returned_value,
    round(sum(day_revenue), 2) AS net_revenue
FROM
(
    -- New names for the columns that are summed: an alias equal to a column name replaces it everywhere.
    SELECT
        channel,
        orders AS day_orders,
        returns AS day_returns,
        order_value AS day_order_value,
        returned_value AS day_returned_value,
        revenue AS day_revenue
    FROM person_history
)
GROUP BY channel
ORDER BY channel
