-- 001: cache entries and the volumes made from them.
--
-- An entry is keyed by (backend, pool, image_id) while it is live. An entry that was
-- evicted but still has clones is kept as a row with pinned = 1 (its backend object is
-- parked in the trash until the last clone is gone), so its bytes can be reported and
-- gc can purge it later. Several pinned rows may exist for one image (it was evicted,
-- re-filled and evicted again), so uniqueness applies to live rows only: a partial
-- unique index. Volumes reference their entry with ON DELETE SET NULL: a volume row
-- outlives its entry (deleting the entry row must never lose the record of a volume).

CREATE TABLE entries (
  id               INTEGER PRIMARY KEY,
  backend          TEXT    NOT NULL,
  pool             TEXT    NOT NULL,
  image_id         TEXT    NOT NULL,
  cache_name       TEXT    NOT NULL,
  snap_name        TEXT    NOT NULL DEFAULT '',
  state            TEXT    NOT NULL CHECK (state IN ('creating', 'ready', 'evicting')),
  virtual_size     INTEGER NOT NULL DEFAULT 0,
  allocated_bytes  INTEGER NOT NULL DEFAULT 0,
  disk_format      TEXT    NOT NULL DEFAULT '',
  checksum         TEXT    NOT NULL DEFAULT '',
  os_hash          TEXT    NOT NULL DEFAULT '',
  image_updated_at TEXT    NOT NULL DEFAULT '',
  depth            INTEGER NOT NULL DEFAULT 0,
  created_at       INTEGER NOT NULL DEFAULT 0,
  last_used        INTEGER NOT NULL DEFAULT 0,
  hits             INTEGER NOT NULL DEFAULT 0,
  owner            TEXT    NOT NULL DEFAULT '',
  pinned           INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1))
);
-- UNIQUE(backend, pool, image_id) among live (not pinned) entries.
CREATE UNIQUE INDEX entries_key ON entries(backend, pool, image_id) WHERE pinned = 0;
-- The eviction pass walks entries least recently used first.
CREATE INDEX entries_last_used ON entries(last_used);

CREATE TABLE volumes (
  id         INTEGER PRIMARY KEY,
  entry_id   INTEGER REFERENCES entries(id) ON DELETE SET NULL,  -- NULL: no entry (any more)
  image_id   TEXT    NOT NULL,
  name       TEXT    NOT NULL,
  pool       TEXT    NOT NULL,
  created_at INTEGER NOT NULL DEFAULT 0,
  depth      INTEGER NOT NULL DEFAULT 0,
  plan       TEXT    NOT NULL,
  size_bytes INTEGER NOT NULL DEFAULT 0,
  flattened  INTEGER NOT NULL DEFAULT 0 CHECK (flattened IN (0, 1)),
  UNIQUE (pool, name)
);
CREATE INDEX volumes_entry ON volumes(entry_id);
