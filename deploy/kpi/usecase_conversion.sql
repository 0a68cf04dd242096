-- Conversion rate per use case, version and arm: exposed persons who ordered in their attribution window
--
-- Of the persons exposed to a use case version (entered its audience while it ran), the share with an
-- Order Completed in their attribution window.
--   persons         exposed persons: each counts once, under their canonical id (person_canonical:
--                   exposures of ids merged into them count), from their first exposure in the version's
--                   run (started_at, up to stopped_at when stopped: the period `omniseg usecases report`
--                   reads). Persons exposed in both arms (a merge joined a control and a treatment
--                   person: usecase_contamination) are left out of both arms.
--   converted       persons with an Order Completed (event_persons, under the same canonical id, any
--                   channel) strictly after their first exposure and at most attribution_window_days
--                   after it
--   conversion_pct  100 * converted / persons
-- The window is the registered one: usecase_registrations.registration (JSON text), key
-- attribution_window_days, of the version's newest revision, read with visitParamExtractUInt (with
-- '": ' made '":' first: registrations written before compact JSON have a space after the colon).
-- `omniseg usecases report` gives the same figures with their confidence intervals, the test and every
-- other KPI of the use case (docs/usecases.md).
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    usecase_id,
    version,
    exposed_arm AS arm,
    count() AS persons,
    countIf(p_orders > 0) AS converted,
    round(100 * countIf(p_orders > 0) / count(), 2) AS conversion_pct
FROM
(
    -- Per canonical person exposed in one arm only: the arm, the first exposure, the window.
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
            arm_name,
            at_ms
        FROM
        (
            SELECT usecase_id, version, person_id, toString(arm) AS arm_name, at_ms
            FROM usecase_exposures AS exposures
            ALL INNER JOIN
            (
                SELECT
                    usecase_id,
                    version,
                    toUInt64(toUInt32(argMax(started_at, revision))) * 1000 AS started_ms,
                    if(argMax(stopped, revision) = 1,
                        toUInt64(toUInt32(argMax(stopped_at, revision))) * 1000, 0) AS stopped_ms
                FROM usecase_registrations
                GROUP BY usecase_id, version
            ) AS registered USING (usecase_id, version)
            WHERE at_ms >= started_ms AND (stopped_ms = 0 OR at_ms <= stopped_ms)
        ) AS in_run
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
    -- Per exposed person: the orders in (first exposure, first exposure + window].
    SELECT usecase_id, version, survivor_id, count() AS p_orders
    FROM
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
    ) AS orders
    ALL INNER JOIN
    (
        SELECT usecase_id, version, survivor_id, first_ms, window_ms
        FROM
        (
            SELECT
                usecase_id,
                version,
                if(canonical_person_id = '', person_id, canonical_person_id) AS survivor_id,
                min(at_ms) AS first_ms
            FROM
            (
                SELECT usecase_id, version, person_id, at_ms
                FROM usecase_exposures AS exposures
                ALL INNER JOIN
                (
                    SELECT
                        usecase_id,
                        version,
                        toUInt64(toUInt32(argMax(started_at, revision))) * 1000 AS started_ms,
                        if(argMax(stopped, revision) = 1,
                            toUInt64(toUInt32(argMax(stopped_at, revision))) * 1000, 0) AS stopped_ms
                    FROM usecase_registrations
                    GROUP BY usecase_id, version
                ) AS registered USING (usecase_id, version)
                WHERE at_ms >= started_ms AND (stopped_ms = 0 OR at_ms <= stopped_ms)
            ) AS in_run
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
                toUInt64(visitParamExtractUInt(replaceAll(argMax(registration, revision), '": ', '":'),
                    'attribution_window_days')) * 86400000 AS window_ms
            FROM usecase_registrations
            GROUP BY usecase_id, version
        ) AS windows USING (usecase_id, version)
    ) AS person_windows USING survivor_id
    WHERE order_ms > first_ms AND order_ms <= first_ms + window_ms
    GROUP BY usecase_id, version, survivor_id
) AS conversions USING (usecase_id, version, survivor_id)
GROUP BY usecase_id, version, arm
ORDER BY usecase_id, version, arm
