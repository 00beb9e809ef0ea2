-- Each call numbers its own notifications: a notification is (call_id, seq). `n` keeps the order
-- rows were committed in, which the retention policy reads oldest first. Rows written before
-- keep their numbers (unique and rising per call already), and each live call goes on above the
-- highest number ever given; attempts name their notification's row.
CREATE TABLE notifications_by_call_seq (
    n INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    callback_uri TEXT NOT NULL,
    change_type TEXT NOT NULL,
    resource_url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL
);
INSERT INTO notifications_by_call_seq (n, seq, call_id, app_id, tenant_id, callback_uri,
    change_type, resource_url, body, created_at, status, attempts, next_attempt_at)
SELECT seq, seq, call_id, app_id, tenant_id, callback_uri, change_type, resource_url, body,
    created_at, status, attempts, next_attempt_at
FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_by_call_seq RENAME TO notifications;
CREATE UNIQUE INDEX notifications_by_call ON notifications (call_id, seq);
CREATE INDEX notifications_pending ON notifications (n) WHERE status = 0;
-- An attempt names its notification's row (`n`, which the old global number was).
CREATE TABLE attempts_by_row (
    n INTEGER NOT NULL,
    at INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT,
    latency_ms INTEGER NOT NULL
);
INSERT INTO attempts_by_row (n, at, http_status, error, latency_ms)
SELECT seq, at, http_status, error, latency_ms FROM attempts ORDER BY rowid;
DROP TABLE attempts;
ALTER TABLE attempts_by_row RENAME TO attempts;
CREATE INDEX attempts_by_notification ON attempts (n);
-- Every number handed out so far was global, so every live call goes on above the highest ever
-- given (kept in `seq_floor` once retention removed the rows that held it).
UPDATE calls
SET body = json_set(body, '$.lastSeq', (
    SELECT MAX(COALESCE((SELECT MAX(seq) FROM notifications), 0),
               COALESCE((SELECT value - 1 FROM meta WHERE key = 'seq_floor'), 0))));
-- This row kept one global sequence from going back; each call keeps its own now.
DELETE FROM meta WHERE key = 'seq_floor';
