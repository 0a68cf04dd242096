-- Consent as each event stated it (docs/consent.md): the consent-manager categories of
-- context.consent.categoryPreferences and the purposes of an identify call's traits.consent, with
-- granted (1) or refused (0), in the same order. The segment stage reads them through the consent
-- policy (OMNISEG_CONSENT_*: purposes, aliases, defaults); these columns keep what was said, as sent.
ALTER TABLE events ADD COLUMN consent_categories Array(String) AFTER properties;
ALTER TABLE events ADD COLUMN consent_granted Array(UInt8) AFTER consent_categories;

-- A view keeps the columns it had when it was created; create events_dedup again to show the new ones.
DROP TABLE IF EXISTS events_dedup;

CREATE VIEW IF NOT EXISTS events_dedup AS
SELECT *
FROM events
FINAL;

-- Who said what, when: one row per category an event stated, with the person the event resolved to
-- (the newest resolution of the message; person_canonical maps a merged person to its survivor).
CREATE VIEW IF NOT EXISTS consent_statements AS
SELECT
    message_id,
    person_id,
    type,
    channel,
    source,
    timestamp,
    timestamp_ms,
    category,
    granted
FROM
(
    SELECT message_id, type, channel, source, timestamp, timestamp_ms, category, granted
    FROM events
    ARRAY JOIN consent_categories AS category, consent_granted AS granted
) AS statements
ANY LEFT JOIN
(
    SELECT message_id, argMax(person_id, resolved_at_ms) AS person_id
    FROM event_persons
    GROUP BY message_id
) AS resolutions USING message_id;
