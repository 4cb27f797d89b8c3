-- 009: LRU reuse distances, for `stats --what-if` (how big the cache should be).
--
-- policy/reuse_distance.h keeps them with a Fenwick tree over access positions: each
-- image marks the position of its latest access (reuse_last), reuse_tree holds the tree's
-- non-zero nodes (positions 1..capacity of reuse_head), and an access's distance is the
-- count (and bytes) of marks after its previous one. When the positions run out they are
-- renumbered 1..k and the tree rebuilt (capacity at least twice the images seen).
-- reuse_hist counts accesses per bucket: unit 'entries' (distinct other images since the
-- previous access) and 'bytes' (their bytes plus the image's own), bucket -1 = cold (a
-- first access); unit 'outcome' counts the same accesses as they happened, bucket 1 a hit
-- and 0 a miss, so that a prediction is compared with what was measured over them.
CREATE TABLE reuse_head (
  id        INTEGER PRIMARY KEY CHECK (id = 1),
  capacity  INTEGER NOT NULL,
  last_seq  INTEGER NOT NULL
);
CREATE TABLE reuse_last (
  image_id  TEXT    NOT NULL PRIMARY KEY,
  seq       INTEGER NOT NULL,
  bytes     INTEGER NOT NULL
);
CREATE INDEX reuse_last_seq ON reuse_last(seq);
CREATE TABLE reuse_tree (
  pos       INTEGER PRIMARY KEY,
  count     INTEGER NOT NULL,
  bytes     INTEGER NOT NULL
);
CREATE TABLE reuse_hist (
  unit      TEXT    NOT NULL,
  bucket    INTEGER NOT NULL,
  count     INTEGER NOT NULL,
  PRIMARY KEY (unit, bucket)
);
