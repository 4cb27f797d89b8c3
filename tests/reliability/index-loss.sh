#!/usr/bin/env bash
# index-loss.sh BACKEND: the SQLite index is deleted; `cachemgr rebuild-index` brings
# every ready entry back from the metadata stored on the backend, each one usable for
# clones (the next create is a hit: plan clone, nothing downloaded) and existing volumes
# keep reading their images.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: index-loss.sh local|rbd}
rel_init "index-loss-$backend"
new_cache "$WORK/c" "$backend" 0

ids=()
for fmt in raw qcow2 raw; do
  id=$(new_uuid)
  make_image "$id" "$fmt" 16 4
  ids+=("$id")
  cm create "$id" "vol-$id" >/dev/null || record "setup create ($fmt)" "$backend" "exit 0" \
    "$(last_err)" 1
done
before=$(sql "SELECT image_id, cache_name, checksum, virtual_size FROM entries
              WHERE state='ready' AND pinned=0 ORDER BY image_id;")

rm -f "$IDX" "$IDX-wal" "$IDX-shm" "$IDX-journal"
out=$(cm --json rebuild-index)
rc=$?
after=$(sql "SELECT image_id, cache_name, checksum, virtual_size FROM entries
             WHERE state='ready' AND pinned=0 ORDER BY image_id;")
if (( rc == 0 )) && [[ -n $before && $after == "$before" ]]; then
  record "index file deleted, rebuild-index" "$backend" \
    "all ${#ids[@]} ready entries back (id, name, checksum, size)" \
    "exit 0; $(wc -l <<<"$after") entries restored, identical" 0
else
  record "index file deleted, rebuild-index" "$backend" \
    "all ${#ids[@]} ready entries back (id, name, checksum, size)" \
    "exit $rc; before $(wc -l <<<"$before") rows, after $(grep -c . <<<"$after") rows; $(last_err)" 1
fi

for id in "${ids[@]}"; do
  json=$(cm --json create "$id" "again-$id")
  rc=$?
  plan=$(jq -r '.plan // empty' <<<"$json" 2>/dev/null)
  ok=0
  obs="exit $rc, plan ${plan:-?}"
  if (( rc != 0 )) || [[ $plan != clone && $plan != flatten_clone && $plan != copy ]]; then
    ok=1
    obs+=" $(last_err)"
  fi
  if ! read_back "again-$id" "$id"; then ok=1; obs+=", new volume does not read back"; fi
  if ! read_back "vol-$id" "$id"; then ok=1; obs+=", old volume does not read back"; fi
  record "clone from a rebuilt entry" "$backend" "a hit (no download), volumes read back" \
    "$obs" $ok
done

ic=$(sql "PRAGMA integrity_check;")
record "rebuilt index integrity" "$backend" "PRAGMA integrity_check = ok" "${ic:-no answer}" \
  "$([[ $ic == ok ]]; echo $?)"
