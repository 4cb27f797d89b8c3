-- 007: totals of the events per kind, and the last event of each kind, for `stats`.
--
-- A year of events is millions of rows; summing them on every `stats` would read the
-- whole table. The totals are kept as rows are inserted, and only then: they count every
-- event ever recorded, so the retention's deletes of old rows lower none of them (the
-- Prometheus counters built on them never go down), and the last event of a kind (the
-- pass's "left alone" count) is kept here even once its row is pruned.
-- Events are never updated.
CREATE TABLE event_totals (
  kind          TEXT    NOT NULL PRIMARY KEY,
  count         INTEGER NOT NULL DEFAULT 0,
  bytes         INTEGER NOT NULL DEFAULT 0,
  micros        INTEGER NOT NULL DEFAULT 0,
  last_id       INTEGER NOT NULL DEFAULT 0,
  last_ts       INTEGER NOT NULL DEFAULT 0,
  last_image_id TEXT    NOT NULL DEFAULT '',
  last_bytes    INTEGER NOT NULL DEFAULT 0,
  last_micros   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO event_totals (kind, count, bytes, micros, last_id, last_ts, last_image_id,
                          last_bytes, last_micros)
  SELECT t.kind, t.count, t.bytes, t.micros, e.id, e.ts, e.image_id, e.bytes, e.micros
  FROM (SELECT kind, count(*) AS count, coalesce(sum(bytes), 0) AS bytes,
               coalesce(sum(micros), 0) AS micros, max(id) AS last_id
        FROM events GROUP BY kind) AS t
  JOIN events AS e ON e.id = t.last_id;

-- One statement a row (an upsert), as it runs on every event recorded.
CREATE TRIGGER events_totals_insert AFTER INSERT ON events
BEGIN
  INSERT INTO event_totals (kind, count, bytes, micros, last_id, last_ts, last_image_id,
                            last_bytes, last_micros)
    VALUES (NEW.kind, 1, NEW.bytes, NEW.micros, NEW.id, NEW.ts, NEW.image_id, NEW.bytes,
            NEW.micros)
    ON CONFLICT (kind) DO UPDATE SET
      count = count + 1, bytes = bytes + excluded.bytes, micros = micros + excluded.micros,
      last_id = excluded.last_id, last_ts = excluded.last_ts,
      last_image_id = excluded.last_image_id, last_bytes = excluded.last_bytes,
      last_micros = excluded.last_micros;
END;
