-- 002: events for `cachemgr stats` (hits, misses, evictions, ...), one row each.
CREATE TABLE events (
  id       INTEGER PRIMARY KEY,
  ts       INTEGER NOT NULL,            -- unix seconds
  kind     TEXT    NOT NULL,            -- hit | miss | direct | evict | stale | gone | error
  image_id TEXT    NOT NULL DEFAULT '',
  bytes    INTEGER NOT NULL DEFAULT 0,
  micros   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_kind ON events(kind);
