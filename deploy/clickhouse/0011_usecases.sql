-- Use cases measured like experiments (docs/usecases.md).
--
-- Registrations: one row per version of a use case; `omniseg usecases start` writes it with the
-- registered fields (the pre-registration: hypothesis, audience, KPIs, window, control share, alpha,
-- minimum detectable effect, power) as JSON and their checksum, and `stop` writes it again with
-- stopped_at set. revision (milliseconds) orders the rows of one version: the newest is current.
CREATE TABLE IF NOT EXISTS usecase_registrations
(
    usecase_id String,
    version UInt32,
    checksum String,
    registration String,
    definition String,
    started_at DateTime,
    stopped_at DateTime,
    stopped UInt8,
    revision UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY (usecase_id, version);

-- Exposures: a person entering a running use case's audience, with the arm the person was assigned
-- (streams/domain/experiments/assignment.py), the time of the entry (event time) and the segment change
-- that exposed them. A person entering again gives another row; reports take each person's first.
-- Replays of a change collapse on change_id.
CREATE TABLE IF NOT EXISTS usecase_exposures
(
    usecase_id String,
    version UInt32,
    person_id String,
    arm Enum8('control' = 1, 'treatment' = 2),
    at DateTime,
    at_ms UInt64,
    segment_id String,
    subject String,
    change_id String,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (usecase_id, version, person_id, change_id);

-- Contamination: persons who, after identity merges, were exposed in both arms of a use case version
-- (a merge joined a control person and a treatment person). The survivor keeps its own arm; reports
-- count these persons and leave them out. survivor_id is the canonical person (person_canonical);
-- exposed_as lists the ids the exposures were recorded under.
CREATE VIEW IF NOT EXISTS usecase_contamination AS
SELECT
    usecase_id,
    version,
    survivor_id,
    groupUniqArray(arm_name) AS arms,
    groupUniqArray(exposed_id) AS exposed_as,
    min(at) AS first_exposed
FROM
(
    SELECT
        usecase_id,
        version,
        if(canonical_person_id = '', person_id, canonical_person_id) AS survivor_id,
        person_id AS exposed_id,
        toString(arm) AS arm_name,
        at
    FROM usecase_exposures AS exposures
    ANY LEFT JOIN
    (
        SELECT person_id, canonical_person_id FROM person_canonical
    ) AS canonical USING person_id
)
GROUP BY usecase_id, version, survivor_id
HAVING uniqExact(arm_name) > 1;
