-- 007: totals of the events per kind, kept by triggers, for `cachemgr stats`.
--
-- A year of events is millions of rows; summing them on every `stats` would read the
-- whole table. The totals are kept as rows are inserted and deleted (the retention
-- deletes the oldest), so stats reads a few rows and the row count needs no count(*).
-- Events are never updated.
CREATE TABLE event_totals (
  kind   TEXT    NOT NULL PRIMARY KEY,
  count  INTEGER NOT NULL DEFAULT 0,
  bytes  INTEGER NOT NULL DEFAULT 0,
  micros INTEGER NOT NULL DEFAULT 0
);
INSERT INTO event_totals (kind, count, bytes, micros)
  SELECT kind, count(*), coalesce(sum(bytes), 0), coalesce(sum(micros), 0)
  FROM events GROUP BY kind;

-- One statement a row (an upsert), as it runs on every event recorded.
CREATE TRIGGER events_totals_insert AFTER INSERT ON events
BEGIN
  INSERT INTO event_totals (kind, count, bytes, micros) VALUES (NEW.kind, 1, NEW.bytes, NEW.micros)
    ON CONFLICT (kind) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes,
                                     micros = micros + excluded.micros;
END;

CREATE TRIGGER events_totals_delete AFTER DELETE ON events
BEGIN
  UPDATE event_totals SET count = count - 1, bytes = bytes - OLD.bytes,
         micros = micros - OLD.micros
   WHERE kind = OLD.kind;
END;
