-- 004: ownership is recorded, not guessed from names.
--
-- Every object the cache makes carries a mark in its metadata with its own identity
-- (the RBD image id; the local inode and birth time) as it was when made; the row
-- records that identity too. Create, delete, gc and eviction act on an object only when
-- the mark and the identity match the row: an object that merely has a cache-like name,
-- or a copy of ours (`rbd cp` copies metadata), is someone else's. '' on rows made
-- before this migration: those objects carry no mark.
ALTER TABLE entries ADD COLUMN identity TEXT NOT NULL DEFAULT '';

-- A volume name is claimed by its row before anything is made: UNIQUE (pool, name)
-- gives one winner among processes sharing the index. The row is 'creating' (with its
-- owner "host:pid" and the random staging name the volume is made under) until the
-- volume has been renamed into place, then 'ready' with its identity. gc removes what a
-- dead owner's creating row names.
ALTER TABLE volumes ADD COLUMN state TEXT NOT NULL DEFAULT 'ready'
  CHECK (state IN ('creating', 'ready'));
ALTER TABLE volumes ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN staging_name TEXT NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN identity TEXT NOT NULL DEFAULT '';
