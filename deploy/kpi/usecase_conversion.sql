-- Conversion rate per use case, version and arm: of the persons exposed (entered the use case's
-- audience while it ran), the share with an Order Completed in their attribution window.
-- A person counts once, under their canonical id (person_canonical: events and exposures of ids merged
-- into them count), from their first exposure; persons exposed in both arms through a merge are left
-- out (usecase_contamination). The window comes from the registration (attribution_window_days);
-- orders strictly after the exposure and up to the window's end count. `omniseg usecases report` gives
-- the same figures with their confidence intervals and every other KPI.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    usecase_id,
    version,
    exposed_arm AS arm,
    count() AS persons,
    countIf(orders > 0) AS converted,
    round(100 * countIf(orders > 0) / count(), 2) AS conversion_pct
FROM
(
    SELECT usecase_id, version, survivor_id, exposed_arm, first_ms, window_ms
    FROM
    (
        SELECT
            usecase_id,
            version,
            survivor_id,
            any(arm_name) AS exposed_arm,
            min(at_ms) AS first_ms,
            uniqExact(arm_name) AS arms
        FROM
        (
            SELECT
                usecase_id,
                version,
                if(canonical_person_id = '', person_id, canonical_person_id) AS survivor_id,
                toString(arm) AS arm_name,
                at_ms
            FROM usecase_exposures AS exposures
            ANY LEFT JOIN
            (
                SELECT person_id, canonical_person_id FROM person_canonical
            ) AS canonical USING person_id
        )
        GROUP BY usecase_id, version, survivor_id
        HAVING arms = 1
    ) AS exposed
    ANY LEFT JOIN
    (
        SELECT
            usecase_id,
            version,
            toUInt64(visitParamExtractUInt(argMax(registration, revision), 'attribution_window_days'))
                * 86400000 AS window_ms
        FROM usecase_registrations
        GROUP BY usecase_id, version
    ) AS windows USING usecase_id, version
) AS persons
ANY LEFT JOIN
(
    SELECT usecase_id, version, survivor_id, count() AS orders
    FROM
    (
        SELECT usecase_id, version, survivor_id, first_ms, window_ms, order_ms
        FROM
        (
            SELECT usecase_id, version, survivor_id, first_ms, window_ms
            FROM
            (
                SELECT
                    usecase_id,
                    version,
                    if(canonical_person_id = '', person_id, canonical_person_id) AS survivor_id,
                    min(at_ms) AS first_ms
                FROM usecase_exposures AS exposures
                ANY LEFT JOIN
                (
                    SELECT person_id, canonical_person_id FROM person_canonical
                ) AS canonical USING person_id
                GROUP BY usecase_id, version, survivor_id
            ) AS firsts
            ANY LEFT JOIN
            (
                SELECT
                    usecase_id,
                    version,
                    toUInt64(visitParamExtractUInt(argMax(registration, revision), 'attribution_window_days'))
                        * 86400000 AS window_ms
                FROM usecase_registrations
                GROUP BY usecase_id, version
            ) AS windows USING usecase_id, version
        ) AS person_windows
        ALL INNER JOIN
        (
            SELECT
                if(canonical_person_id = '', person_id, canonical_person_id) AS survivor_id,
                timestamp_ms AS order_ms
            FROM
            (
                SELECT person_id, timestamp_ms FROM event_persons FINAL WHERE event = 'Order Completed'
            ) AS placed
            ANY LEFT JOIN
            (
                SELECT person_id, canonical_person_id FROM person_canonical
            ) AS canonical USING person_id
        ) AS orders USING survivor_id
    )
    WHERE order_ms > first_ms AND order_ms <= first_ms + window_ms
    GROUP BY usecase_id, version, survivor_id
) AS conversions USING usecase_id, version, survivor_id
GROUP BY usecase_id, version, arm
ORDER BY usecase_id, version, arm
