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
