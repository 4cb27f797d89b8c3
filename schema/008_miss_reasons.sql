-- 008: why each miss happened (cold, capacity, stale, too_big, lost), for `stats`.
--
-- Every miss event (kinds miss and uncached) carries its reason; other events carry ''.
ALTER TABLE events ADD COLUMN reason TEXT NOT NULL DEFAULT '';

-- Totals per reason, kept by the trigger as rows are inserted, like event_totals (007):
-- the retention's deletes lower none of them, so the counters never go down. The misses
-- recorded before this schema have no reason: they are counted as 'unknown', so the
-- reasons always add up to the misses.
CREATE TABLE miss_totals (
  reason TEXT    NOT NULL PRIMARY KEY,
  count  INTEGER NOT NULL DEFAULT 0,
  bytes  INTEGER NOT NULL DEFAULT 0  -- bytes downloaded by those misses
);
INSERT INTO miss_totals (reason, count, bytes)
  SELECT 'unknown', sum(count), sum(bytes) FROM event_totals
  WHERE kind IN ('miss', 'uncached') HAVING sum(count) > 0;

CREATE TRIGGER events_miss_totals_insert AFTER INSERT ON events WHEN NEW.reason <> ''
BEGIN
  INSERT INTO miss_totals (reason, count, bytes) VALUES (NEW.reason, 1, NEW.bytes)
    ON CONFLICT (reason) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;

-- What last happened to each image's entry in a backend location, so that its next miss
-- can say why it missed: 'cached' (filled or adopted: a miss after it finds the entry
-- vanished without the cache removing it, "lost"), 'capacity' (evicted by a limit),
-- 'stale' (evicted because the source changed, or no longer had it). No row: "cold".
-- One row per image (the newest fate wins); pruned with the events (age, then count),
-- never while the image has a live entry.
CREATE TABLE entry_fates (
  backend  TEXT    NOT NULL,
  pool     TEXT    NOT NULL,
  image_id TEXT    NOT NULL,
  ts       INTEGER NOT NULL,  -- unix seconds
  fate     TEXT    NOT NULL,  -- cached | capacity | stale
  PRIMARY KEY (backend, pool, image_id)
);
CREATE INDEX entry_fates_ts ON entry_fates(ts);
