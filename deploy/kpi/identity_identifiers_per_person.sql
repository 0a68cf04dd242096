-- Persons by their number of identifiers (1, 2, 3, 4, 5-9, 10+) and their share
--
-- Distribution of identifiers per person (all kinds, after merges): how many persons have 1, 2, 3, 4,
-- 5-9 or 10+ identifiers, and their share of all persons. A long 10+ tail usually means a shared device
-- or a junk value missing from the blocklist (deploy/identity.yaml).
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    multiIf(n >= 10, '10+', n >= 5, '5-9', toString(n)) AS identifiers_per_person,
    count() AS persons,
    round(persons / (SELECT uniqExact(person_id) FROM identities_current), 4) AS share,
    min(n) AS bucket_min
FROM
(
    SELECT person_id, count() AS n FROM identities_current GROUP BY person_id
)
GROUP BY identifiers_per_person
ORDER BY bucket_min
