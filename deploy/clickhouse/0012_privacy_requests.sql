-- Data-subject requests (docs/privacy.md): erasure (GDPR Art. 17) and subject access (Art. 15).
--
-- One row per request and state; revision (milliseconds) orders the rows of one request: the newest
-- is current. The row holds no personal data:
--   - subject is the SHA-256 (hex) of the person's canonical id, so a second request for the same
--     person is recognised while one is in progress, without storing the id;
--   - receipt is JSON naming every store the request reached and how many rows or records it changed
--     there, with the times; detail is a one-line reason when the request failed.
CREATE TABLE IF NOT EXISTS privacy_requests
(
    request_id String,
    kind Enum8('erasure' = 1, 'access' = 2),
    subject String,
    status Enum8('received' = 1, 'in_progress' = 2, 'done' = 3, 'failed' = 4),
    suppress UInt8,
    receipt String,
    detail String,
    requested_at DateTime,
    updated_at DateTime,
    revision UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY request_id;
