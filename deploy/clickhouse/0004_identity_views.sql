-- Exact reads of the identity tables (0003), with every person id mapped to its canonical person:
-- the live survivor of all the merges it went through. Written for ClickHouse 18.16 and current
-- ClickHouse alike (ANY LEFT JOIN ... USING; no window functions, no JSON functions).
--
-- How analysts use them:
--   A person's full history, including events sent before a merge under an id that no longer exists:
--     SELECT timestamp, channel, event, revenue FROM events_by_person
--     WHERE person_id = 'c0ffee...' ORDER BY timestamp;
--   The person behind an identifier (keys are "kind:value", normalised: trimmed, emails lower-cased):
--     SELECT person_id FROM identities_current WHERE identifier = 'email:ann@shop.com';
--   All identifiers of a person:
--     SELECT kind, value, first_seen FROM identities_current WHERE person_id = 'c0ffee...';
--   Where an old id went:  SELECT canonical_person_id FROM person_canonical WHERE person_id = 'old...';
--   (An id with no row in person_canonical was never merged: it is canonical itself.)
--   Per-person aggregates over the whole history:
--     SELECT person_id, count() AS events, sum(revenue) AS revenue FROM events_by_person
--     GROUP BY person_id ORDER BY revenue DESC LIMIT 20;
-- The views read whole tables before filtering; for one person on a large table, the fast form is the
-- one streams/warehouse/persons.py uses: the person's ids are its canonical id plus
--   SELECT person_id FROM person_aliases FINAL WHERE canonical_person_id = 'c0ffee...'
-- and event_persons is then filtered with person_id IN (those ids).

-- Each merged person id -> its current canonical person. Of an id's alias rows, the current one points
-- at a person that was not merged itself (see person_aliases in 0003).
CREATE VIEW IF NOT EXISTS person_canonical AS
SELECT
    person_id,
    argMax(target_person_id, version) AS canonical_person_id
FROM
(
    SELECT person_id, canonical_person_id AS target_person_id, version
    FROM person_aliases
    WHERE canonical_person_id NOT IN (SELECT person_id FROM person_aliases)
)
GROUP BY person_id;

-- The current owner of every identifier (newest version), as a canonical person id.
-- assigned_person_id is the owner named by the newest assignment, before merges are applied.
CREATE VIEW IF NOT EXISTS identities_current AS
SELECT
    identifier,
    identifier_kind AS kind,
    identifier_value AS value,
    if(canonical_person_id = '', assigned_person_id, canonical_person_id) AS person_id,
    assigned_person_id,
    newest_version AS version,
    identifier_first_seen AS first_seen,
    assigned_at AS at
FROM
(
    -- Aggregates get new names: in ClickHouse an alias equal to a column name replaces that column
    -- everywhere in the query, including inside the other aggregates.
    SELECT
        identifier,
        any(kind) AS identifier_kind,
        any(value) AS identifier_value,
        argMax(person_id, version) AS assigned_person_id,
        max(version) AS newest_version,
        min(first_seen) AS identifier_first_seen,
        argMax(at, version) AS assigned_at
    FROM identities
    GROUP BY identifier
) AS assigned
ANY LEFT JOIN
(
    SELECT person_id AS assigned_person_id, canonical_person_id FROM person_canonical
) AS canonical USING assigned_person_id;

-- Every resolved event once, under its canonical person. resolved_person_id is the person the event
-- resolved to when it happened (possibly merged since).
CREATE VIEW IF NOT EXISTS events_by_person AS
SELECT
    if(canonical_person_id = '', resolved_person_id, canonical_person_id) AS person_id,
    resolved_person_id,
    message_id,
    channel,
    type,
    event,
    name,
    source,
    identifiers,
    anonymous_id,
    user_id,
    page_path,
    store_id,
    revenue,
    currency,
    timestamp,
    received_at,
    resolved_at
FROM
(
    SELECT
        person_id AS resolved_person_id,
        message_id,
        channel,
        type,
        event,
        name,
        source,
        identifiers,
        anonymous_id,
        user_id,
        page_path,
        store_id,
        revenue,
        currency,
        timestamp,
        received_at,
        resolved_at
    FROM event_persons
    FINAL
) AS resolved
ANY LEFT JOIN
(
    SELECT person_id AS resolved_person_id, canonical_person_id FROM person_canonical
) AS canonical USING resolved_person_id;
