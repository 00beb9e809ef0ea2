CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE ended_calls (
    n INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    ended_at INTEGER NOT NULL
);
CREATE TABLE pruned_calls (
    n INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL UNIQUE,
    at INTEGER NOT NULL,
    notifications INTEGER NOT NULL
);
