-- Customer lifetime value (historical) per segment: the current members of each segment and their net
-- revenue over their whole history (orders minus returns, the one revenue definition, every channel,
-- events of ids merged into them included: events_by_person).
--   members        current members (segment_membership_current; a suppression audience counts
--                  (person, product or category) pairs, so its figures sum over subjects)
--   buyers         members with any revenue
--   total_clv      the members' net revenue in all
--   avg_clv        total_clv / members
-- The whole customer base is the row segment_id = '(all persons)'.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    segment_id,
    count() AS members,
    countIf(clv != 0) AS buyers,
    round(sum(clv), 2) AS total_clv,
    round(sum(clv) / greatest(count(), 1), 2) AS avg_clv
FROM
(
    SELECT segment_id, person_id FROM segment_membership_current
    UNION ALL
    SELECT '(all persons)' AS segment_id, person_id FROM events_by_person GROUP BY person_id
) AS members
ANY LEFT JOIN
(
    SELECT person_id, sum(revenue) AS clv FROM events_by_person GROUP BY person_id
) AS lifetime USING person_id
GROUP BY segment_id
ORDER BY segment_id = '(all persons)', segment_id
