#!/usr/bin/env bash
# hostile.sh BACKEND: image ids and volume names that try path traversal or injection
# are refused with exit 2 (kInvalidArgument) before they reach a path, an RBD name or a
# command line: after each attempt nothing new exists on the backend, in the index, in
# the conversion dir or next to the image dir, and the canary file an injected
# `rm -rf` would delete is still there.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: hostile.sh local|rbd}
rel_init "hostile-$backend"
new_cache "$WORK/c" "$backend" 0

good=$(new_uuid)
make_image "$good" raw 8 2
# Bait for traversal: a readable image one level above the image dir, where `../x`
# would find it, and a canary an injected command would remove.
make_image "$good-x" raw 8 2
cp "$IMAGES/$good-x" "$IMAGES/../x"
cp "$IMAGES/$good-x" "$WORK/x"
touch "$WORK/canary"
# id lists for prefill --from-file (a NUL byte cannot travel in argv)
printf '%s\0evil\n' "$good" >"$WORK/nul-ids"
printf '../x\n' >"$WORK/dot-ids"
CFG_DIR=$WORK/c

snapshot() {
  {
    backend_images
    sql "SELECT 'row', image_id, state FROM entries; SELECT 'vol', name FROM volumes;"
    find "$CONV" "$WORK" -mindepth 1 -maxdepth 2 -not -path "$WORK/c/root*" \
      -not -path "$WORK/c/index.db*" -not -name 'last.err' -printf '%P\n' 2>/dev/null
  } | sort
}

long=$(printf 'a%.0s' $(seq 1 300))
utf=$'\xc3\xa9t\xc3\xa9-\xe2\x98\x83'
bad_utf8=$'abc\xff\xfe'
declare -a names=(
  "../x"
  "../../x"
  "/etc/passwd"
  "a;rm -rf $WORK/canary"
  "\$(touch $WORK/pwned)"
  "\`touch $WORK/pwned\`"
  "a b"
  "-rf"
  "--help"
  "."
  ".."
  "a/b"
  "x@snap"
  "pool/x"
  "$long"
  "$utf"
  "$bad_utf8"
  $'line\nbreak'
  ""
)
# Each name as a row label: control bytes shown escaped.
label() { local n=${1//$WORK/\$WORK}; printf '%q' "$n" | cut -c1-60; }

cm create "$good" vol-ok >/dev/null || record "setup" "$backend" "create of a good image" \
  "$(last_err)" 1
before=$(snapshot)

try() {  # try WHAT ARGS...: expects exit 2 (EXPECT_RC: a regex of codes) and no change
  local what=$1 expect=${EXPECT_RC:-2}
  shift
  local rc obs ok=0
  timeout 120 "$CACHEMGR_BIN" --config "$CFG" "$@" >/dev/null 2>"$WORK/last.err"
  rc=$?
  local after
  after=$(snapshot)
  obs="exit $rc"
  [[ $rc =~ ^($expect)$ ]] || ok=1
  if [[ $after != "$before" ]]; then
    obs+="; created: $(diff <(echo "$before") <(echo "$after") | grep '^>' | head -n 3 | tr '\n' ' ')"
    ok=1
  fi
  [[ -e $WORK/canary ]] || { obs+="; canary removed"; ok=1; touch "$WORK/canary"; }
  [[ -e $WORK/pwned ]] && { obs+="; injected command ran"; ok=1; rm -f "$WORK/pwned"; }
  [[ -e $IMAGES/../x && -e $WORK/x ]] || { obs+="; bait file touched"; ok=1; }
  local msg
  msg=$(head -n 1 "$WORK/last.err" | cut -c1-100)
  record "$what" "$backend" "exit ${expect//|/ or }, nothing created" "$obs${msg:+ ($msg)}" $ok
}

# Positive controls: the same argv shapes with good names work, so a refusal below is
# about the name, not about how it was passed.
if cm create -- "$good" vol-ok2 >/dev/null && cm show -- "$good" >/dev/null; then
  record "control: good id and volume after --" "$backend" "exit 0" "exit 0" 0
else
  record "control: good id and volume after --" "$backend" "exit 0" "$(last_err)" 1
fi
before=$(snapshot)

for n in "${names[@]}"; do
  try "image id $(label "$n")" create -- "$n" vol-h
  try "volume name $(label "$n")" create -- "$good" "$n"
  try "show $(label "$n")" show -- "$n"
done

# A NUL byte cannot travel in argv; prefill --from-file reads ids from a file. A batch
# may report its failed items with exit 1 (the operation failed) or refuse the whole
# list as invalid (2); either way nothing may be created.
EXPECT_RC='1|2'
try "image id with a NUL (prefill --from-file)" prefill --from-file "$WORK/nul-ids"
try "image id ../x (prefill --from-file)" prefill --from-file "$WORK/dot-ids"
