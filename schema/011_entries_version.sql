-- 011: a count that moves whenever the set of entries changes: a row made or dropped,
-- or one whose name, object identity, state or pin changed. Not on a use (last_used,
-- hits) or a source check. A pass that compared the pool with this index and found them
-- in step records this count beside the pool's stamp (Backend::PoolStamp); the next
-- pass that finds both as they were has nothing to compare (engine/reconcile.cpp).
-- Every statement may run again: Index::Open runs them all when the row or a trigger is
-- missing (dropped by hand), bumps the count and forgets the pass state
-- (index/index_pass.cpp); a later migration that changes what these triggers read must
-- change that repair too.
CREATE TABLE IF NOT EXISTS entries_version (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  n  INTEGER NOT NULL
);
INSERT OR IGNORE INTO entries_version (id, n) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS entries_version_insert AFTER INSERT ON entries
BEGIN
  UPDATE entries_version SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS entries_version_delete AFTER DELETE ON entries
BEGIN
  UPDATE entries_version SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS entries_version_update AFTER UPDATE ON entries
WHEN OLD.backend IS NOT NEW.backend OR OLD.pool IS NOT NEW.pool
  OR OLD.image_id IS NOT NEW.image_id OR OLD.cache_name IS NOT NEW.cache_name
  OR OLD.identity IS NOT NEW.identity OR OLD.state IS NOT NEW.state
  OR OLD.pinned IS NOT NEW.pinned
BEGIN
  UPDATE entries_version SET n = n + 1;
END;
