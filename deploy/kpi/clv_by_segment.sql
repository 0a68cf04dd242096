-- Customer lifetime value per segment: current members' net revenue over their whole history
--
-- Customer lifetime value (historical) per segment: the current members of each segment and audience,
-- and their net revenue over their whole history (orders minus returns, the one revenue definition,
-- every channel, events of ids merged into them included).
--   members            persons currently in the segment (segment_membership_current; a suppression
--                      audience, with one membership per product or category, counts each person once)
--   buyers             members with at least one Order Completed
--   total_clv          the members' net revenue in all
--   avg_clv            total_clv / members
--   avg_clv_per_buyer  total_clv / buyers
-- The row segment_id = '(all persons)' is every person with a resolved event (anonymous visitors
-- included). Per person: clv_top_persons.
-- Reads person_history (0013): resolved events under their canonical person, each once, and the days
-- whose raw events retention removed from their rollup (docs/retention.md).
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    segment_id,
    count() AS members,
    countIf(p_orders > 0) AS buyers,
    round(sum(p_clv), 2) AS total_clv,
    round(sum(p_clv) / greatest(count(), 1), 2) AS avg_clv,
    round(sum(p_clv) / greatest(countIf(p_orders > 0), 1), 2) AS avg_clv_per_buyer
FROM
(
    SELECT segment_id, person_id FROM segment_membership_current GROUP BY segment_id, person_id
    UNION ALL
    SELECT '(all persons)' AS segment_id, person_id FROM person_history GROUP BY person_id
) AS members
ANY LEFT JOIN
(
    SELECT person_id, sum(revenue) AS p_clv, sum(orders) AS p_orders
    FROM person_history
    GROUP BY person_id
) AS lifetime USING person_id
GROUP BY segment_id
ORDER BY segment_id = '(all persons)', segment_id
