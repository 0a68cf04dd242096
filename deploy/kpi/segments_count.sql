-- Segments now: one row. defined_segments: live definitions (newest version not a removal);
-- segments_with_members: segments (suppression audiences count once) with at least one member;
-- memberships: current (segment, subject, person) memberships; persons_in_segments: distinct persons
-- in at least one segment or audience.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    (
        SELECT count()
        FROM
        (
            SELECT segment_id, argMax(deleted, version) AS removed
            FROM segment_definitions
            GROUP BY segment_id
        )
        WHERE removed = 0
    ) AS defined_segments,
    uniqExact(segment_id) AS segments_with_members,
    count() AS memberships,
    uniqExact(person_id) AS persons_in_segments
FROM segment_membership_current
