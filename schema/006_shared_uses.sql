-- 006: when this host last told the hosts sharing the pool (the cluster's `uses` table)
-- that it used an entry. A hit writes the use to the cluster only when this is older
-- than a minute, so a burst of hits on one entry costs one cluster write, not one each.
ALTER TABLE entries ADD COLUMN shared_at INTEGER NOT NULL DEFAULT 0;
