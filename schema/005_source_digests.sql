-- 005: the digests the file source computed, kept per file version.
--
-- A file-source image without a sidecar digest is hashed (md5 and sha512) to learn what
-- it is; that is a read of the whole image. The result is kept here, keyed by the image
-- store (its absolute directory) and the image id, with the identity of the file it was
-- computed from: "dev:ino:size:mtime_ns:ctime_ns:nlink". While a stat of the file gives the
-- same identity (or one where only ctime moved with the link count: a hard link added or
-- dropped), the digests (and the format read from its header) are answered from this
-- row; any other identity (rewritten in place, replaced, touched back to its old mtime:
-- ctime still moves) means another version, hashed again.
CREATE TABLE source_digests (
  location     TEXT    NOT NULL,
  image_id     TEXT    NOT NULL,
  identity     TEXT    NOT NULL,
  disk_format  TEXT    NOT NULL DEFAULT '',
  md5          TEXT    NOT NULL DEFAULT '',
  sha512       TEXT    NOT NULL DEFAULT '',
  computed_at  INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (location, image_id)
);
