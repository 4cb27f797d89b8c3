-- 010: small values this host's eviction passes keep between runs. `uses_stamp`: the
-- stamp (Backend::TableStamp) the pool's table of last uses had when this index last
-- merged all of it; a pass that finds the same stamp merges nothing new from it.
CREATE TABLE pass_state (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
