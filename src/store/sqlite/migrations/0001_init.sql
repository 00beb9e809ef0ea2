CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE notifications (
    seq INTEGER PRIMARY KEY,
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
CREATE INDEX notifications_by_call ON notifications (call_id, seq);
CREATE INDEX notifications_pending ON notifications (seq) WHERE status = 0;
CREATE TABLE attempts (
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT,
    latency_ms INTEGER NOT NULL
);
CREATE INDEX attempts_by_seq ON attempts (seq);
