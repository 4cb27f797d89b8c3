-- 003: when an entry was last confirmed current by the source, and an index for the
-- eviction pass.
--
-- A hit asks the source (a Glance GET) only when source_checked_at is older than
-- cache.source_check_interval_s. The eviction pass reads the totals of the live
-- entries and walks ready entries least recently used first, stopping as soon as the
-- limits hold: the index below answers both without touching the table.
ALTER TABLE entries ADD COLUMN source_checked_at INTEGER NOT NULL DEFAULT 0;
-- entries_lru replaces 001's index on last_used alone: one index serves the LRU order.
DROP INDEX entries_last_used;
CREATE INDEX entries_lru
  ON entries(backend, pool, pinned, state, last_used, id, virtual_size, allocated_bytes);

-- Totals of the live (not pinned) entries per backend and pool, kept by triggers, so
-- the limits are checked without summing every row. A touch on the hit path changes
-- none of the summed columns and fires nothing.
CREATE TABLE entry_totals (
  backend         TEXT    NOT NULL,
  pool            TEXT    NOT NULL,
  count           INTEGER NOT NULL DEFAULT 0,
  virtual_bytes   INTEGER NOT NULL DEFAULT 0,
  allocated_bytes INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (backend, pool)
);
INSERT INTO entry_totals (backend, pool, count, virtual_bytes, allocated_bytes)
  SELECT backend, pool, count(*), sum(virtual_size), sum(allocated_bytes)
  FROM entries WHERE pinned = 0 GROUP BY backend, pool;

CREATE TRIGGER entries_totals_insert AFTER INSERT ON entries WHEN NEW.pinned = 0
BEGIN
  INSERT OR IGNORE INTO entry_totals (backend, pool) VALUES (NEW.backend, NEW.pool);
  UPDATE entry_totals SET count = count + 1, virtual_bytes = virtual_bytes + NEW.virtual_size,
         allocated_bytes = allocated_bytes + NEW.allocated_bytes
   WHERE backend = NEW.backend AND pool = NEW.pool;
END;

CREATE TRIGGER entries_totals_delete AFTER DELETE ON entries WHEN OLD.pinned = 0
BEGIN
  UPDATE entry_totals SET count = count - 1, virtual_bytes = virtual_bytes - OLD.virtual_size,
         allocated_bytes = allocated_bytes - OLD.allocated_bytes
   WHERE backend = OLD.backend AND pool = OLD.pool;
END;

CREATE TRIGGER entries_totals_update
AFTER UPDATE OF backend, pool, pinned, virtual_size, allocated_bytes ON entries
BEGIN
  UPDATE entry_totals SET count = count - 1, virtual_bytes = virtual_bytes - OLD.virtual_size,
         allocated_bytes = allocated_bytes - OLD.allocated_bytes
   WHERE OLD.pinned = 0 AND backend = OLD.backend AND pool = OLD.pool;
  INSERT OR IGNORE INTO entry_totals (backend, pool)
    SELECT NEW.backend, NEW.pool WHERE NEW.pinned = 0;
  UPDATE entry_totals SET count = count + 1, virtual_bytes = virtual_bytes + NEW.virtual_size,
         allocated_bytes = allocated_bytes + NEW.allocated_bytes
   WHERE NEW.pinned = 0 AND backend = NEW.backend AND pool = NEW.pool;
END;
