-- Number of use cases: running, stopped, and analysis periods (versions) in all
--
-- Use cases: how many are running and stopped now, and how many analysis periods (versions) they had.
-- From usecase_registrations (omniseg usecases start / stop), the newest revision of each version; a
-- use case runs when its newest version is not stopped.
--   usecases          use cases ever started
--   running           use cases whose newest version runs now
--   stopped           use cases whose newest version was stopped
--   versions          analysis periods in all (a new version: registered fields changed)
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    count() AS usecases,
    countIf(newest_stopped = 0) AS running,
    countIf(newest_stopped = 1) AS stopped,
    sum(version_count) AS versions
FROM
(
    SELECT
        usecase_id,
        argMax(is_stopped, version) AS newest_stopped,
        count() AS version_count
    FROM
    (
        SELECT usecase_id, version, argMax(stopped, revision) AS is_stopped
        FROM usecase_registrations
        GROUP BY usecase_id, version
    )
    GROUP BY usecase_id
)
