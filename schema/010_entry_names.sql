-- 010: an index on the live entries' names.
--
-- Whether a name (or a fill's staging prefix) belongs to a live entry is asked by the
-- pass for each lock key, orphan object and entry another host made. Without this index
-- each question walked every live row (about 0.3 s at 100,000 entries), so a pass that
-- met a thousand such names took minutes.
CREATE INDEX entries_name ON entries(backend, pool, cache_name) WHERE pinned = 0;
