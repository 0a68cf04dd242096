-- Orders, returns and gross, returned and net revenue per channel
--
-- Orders, returns and revenue per channel, in omniseg's one revenue definition, the one segments use
-- (streams/domain/revenue.py, docs/decisions/0001-revenue.md):
--   an event's value is properties.revenue, else properties.total, else its lines' quantity x unit price;
--   its revenue is + the value for Order Completed, - the value for Order Refunded and Product Returned,
--   0 for every other event.
-- The identity sink writes each resolved event's revenue to event_persons.revenue with that code, so
-- this query only sums it; FINAL counts every event once however often it was delivered or retried.
--   orders          Order Completed events
--   returns         Order Refunded and Product Returned events
--   gross_revenue   the value of the orders
--   returned_value  the value of the returns and refunds
--   net_revenue     gross_revenue - returned_value (what sum(revenue) over events_by_person gives)
-- Resolved events only: an event that identity resolution refused (no usable identifier) is in
-- invalid_events instead. Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    channel,
    countIf(event = 'Order Completed') AS orders,
    countIf(event IN ('Order Refunded', 'Product Returned')) AS returns,
    round(sumIf(revenue, event = 'Order Completed'), 2) AS gross_revenue,
    round(-sumIf(revenue, event IN ('Order Refunded', 'Product Returned')), 2) AS returned_value,
    round(sum(revenue), 2) AS net_revenue
FROM event_persons
FINAL
GROUP BY channel
ORDER BY channel
