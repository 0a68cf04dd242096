-- Number of segments: defined, personalised, suppression audiences, with members
--
-- Segments defined now and how many of them have members. A segment is defined when the newest version
-- of its definition (segment_definitions, one row per version) is not a removal.
--   defined                 segments and suppression audiences defined now
--   segments                of those, kind 'segment' (rules over behaviour and traits)
--   personalised_segments   segments flagged personalised: true (the personalised_traffic_share KPI)
--   suppression_audiences   kind 'suppression' ("exclude already purchased"; one membership per product)
--   with_members            defined segments and audiences with at least one current member
--   memberships             current (segment, subject, person) memberships
--   persons_in_segments     distinct persons in at least one segment or audience
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    count() AS defined,
    countIf(current_kind = 'segment') AS segments,
    countIf(current_kind = 'segment' AND current_personalised = 1) AS personalised_segments,
    countIf(current_kind = 'suppression') AS suppression_audiences,
    countIf(members > 0) AS with_members,
    (SELECT count() FROM segment_membership_current) AS memberships,
    (SELECT uniqExact(person_id) FROM segment_membership_current) AS persons_in_segments
FROM
(
    -- Aggregates get new names: in ClickHouse an alias equal to a column name replaces that column
    -- everywhere in the query.
    SELECT
        segment_id,
        argMax(deleted, version) AS current_deleted,
        argMax(kind, version) AS current_kind,
        argMax(personalised, version) AS current_personalised
    FROM segment_definitions
    GROUP BY segment_id
) AS definitions
ANY LEFT JOIN
(
    SELECT segment_id, count() AS members FROM segment_membership_current GROUP BY segment_id
) AS membership USING segment_id
WHERE current_deleted = 0
