#!/usr/bin/python3
"""Merges the result files of one bench run into the table, latest.json and the chart.

usage: report.py --in DIR --meta META.json --json OUT.json [--png OUT.png] [--gnuplot gnuplot]

Exit status: 0 when no goal FAILED, 3 when one did, 2 when the result files are
inconsistent (the same series twice in one file, or rounds of different units).

Every number in a ratio comes from the same run. Over 600 lines: build() holds every
row of the table, each goal beside the ratio that checks it, so they are read together.

Series and rounds. Each result file (DIR/*.json) holds {"series": [{"scenario", "name",
"unit", "samples", "extra"}]}. One file is one round of each series in it: the same
(scenario, name) twice in one file is an error. Files that carry the same series are its
rounds (run.sh writes hit-engine-1.json, hit-engine-2.json ... for repetitions); they are
kept apart in the output as "rounds" (file, n, p50 of each), and p50/p90 are over the
samples of all rounds together, with "n" (samples) and "rounds" beside them. A round that
did not finish is a failed step (below), never a smaller series.

Goals. A goal is declared in build() as

    t.goal(SCENARIOS, TEXT, VALUE, TARGET, CMP, UNIT, inputs=[SERIES...])

SCENARIOS: the series scenarios (the "scenario" of the result series: hit, miss, rss,
local_hit ...) whose figures VALUE is made of; VALUE: the measured figure (None or NaN when
its inputs are missing); CMP "<=" or ">=" against TARGET; UNIT printed after the target
("x" for ratios); inputs: the series VALUE reads (their n and rounds are shown beside the
goal). Declare the goal whether or not its scenario ran, so every goal is in the table.
Its status:

  FAILED   a step of run.sh that feeds one of SCENARIOS failed (bench/step_scenarios.py maps
           step names to scenarios; a step name it does not know fails every goal), or
           the scenarios were asked for and VALUE is still missing;
  not run  VALUE is missing and a scenario was not asked for (BENCH_ONLY);
  met / NOT MET  VALUE against TARGET.

FAILED wins over the figures: a failed round never shows "met".
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_scenarios  # noqa: E402

EXIT_FAILED = 3
EXIT_INCONSISTENT = 2


class ReportError(Exception):
    pass


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    rank = p / 100.0 * (len(v) - 1)
    lo, hi = int(math.floor(rank)), int(math.ceil(rank))
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def load(indir):
    """Series by (scenario, name); a series met in several files keeps each as a round."""
    series = {}
    for path in sorted(glob.glob(os.path.join(indir, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        fname = os.path.basename(path)
        seen = set()
        for s in doc.get("series", []):
            key = (s["scenario"], s["name"])
            if key in seen:
                raise ReportError("%s: series %s/%s twice in one file" % (fname, *key))
            seen.add(key)
            rnd = {"file": fname, "n": len(s["samples"]), "p50": pct(s["samples"], 50)}
            scalars = {k: v for k, v in s.get("extra", {}).items()
                       if not isinstance(v, (list, dict))}
            if scalars:
                rnd["extra"] = scalars
            if key not in series:
                s = dict(s, samples=list(s["samples"]), extra=dict(s.get("extra", {})))
                s["rounds"] = [rnd]
                series[key] = s
                continue
            have = series[key]
            if have.get("unit") != s.get("unit"):
                raise ReportError("series %s/%s: unit %r in %s but %r in %s" % (
                    key[0], key[1], s.get("unit"), fname, have.get("unit"),
                    have["rounds"][0]["file"]))
            have["samples"] += s["samples"]
            # Lists (per-volume figures) add up; scalars stay per round in "rounds" and
            # the first round's value stands for the series.
            for k, v in s.get("extra", {}).items():
                if isinstance(v, list):
                    have["extra"].setdefault(k, []).extend(v)
            have["rounds"].append(rnd)
    for s in series.values():
        s["p50"] = pct(s["samples"], 50)
        s["p90"] = pct(s["samples"], 90)
        s["n"] = len(s["samples"])
    return series


def missing(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


class Table:
    def __init__(self):
        self.rows = []
        self.goals = []

    def row(self, scenario, what, p50, p90, unit, note=""):
        self.rows.append({"scenario": scenario, "what": what, "p50": p50, "p90": p90,
                          "unit": unit, "note": note})

    def goal(self, scenarios, text, value, target, cmp, unit="x", inputs=()):
        assert cmp in ("<=", ">="), cmp
        if missing(value):
            status = None  # decided by judge(): not run or FAILED
        else:
            ok = value <= target if cmp == "<=" else value >= target
            status = "met" if ok else "NOT MET"
        self.goals.append({
            "goal": text, "scenarios": list(scenarios), "value": value,
            "target": "%s %s%s" % (cmp, target, unit), "status": status,
            "inputs": [{"series": "%s/%s" % (s["scenario"], s["name"]), "n": s["n"],
                        "rounds": len(s.get("rounds", [])) or None}
                       for s in inputs if s]})


def judge(t, meta):
    """Applies the run's failed steps and asked-for scenarios to every goal's status."""
    failed_all, failed = [], {}
    for step in meta.get("failed", []):
        scs = step_scenarios.scenarios_of(step)
        if scs is None:
            failed_all.append(step)
        for sc in scs or []:
            failed.setdefault(sc, []).append(step)
    asked = step_scenarios.requested(meta.get("scenarios"))
    for gl in t.goals:
        steps = list(dict.fromkeys(
            failed_all + [st for sc in gl["scenarios"] for st in failed.get(sc, [])]))
        if steps:
            gl["status"] = "FAILED"
            gl["why"] = "failed step%s: %s" % ("s" if len(steps) > 1 else "", ", ".join(steps))
        elif gl["status"] is None:
            if asked is not None and not set(gl["scenarios"]) <= asked | {"run"}:
                gl["status"] = "not run"
            else:
                gl["status"] = "FAILED"
                gl["why"] = "no figures from a scenario that ran"
    return any(gl["status"] == "FAILED" for gl in t.goals)


def fmt(x, digits=None):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return "%.*f" % (digits, x)


def nr(s):
    """Samples and rounds of a series, for a row's note."""
    r = len(s.get("rounds", []))
    return "n=%d" % s["n"] + (", %d rounds" % r if r > 1 else "")


def ratio(a, b):
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def build(series):
    t = Table()
    g = lambda sc, name: series.get((sc, name))  # noqa: E731
    p50 = lambda s: s["p50"] if s else float("nan")  # noqa: E731
    extra = lambda s, k: (s or {}).get("extra", {}).get(k)  # noqa: E731

    # --- hit
    eng, cin, flo = g("hit", "engine"), g("hit", "cinder"), g("hit", "floor")
    eng0, engr, flor = (g("hit", "engine source every hit"), g("hit", "engine resize"),
                        g("hit", "floor resize"))
    for s, label in ((eng, "CreateVolume on a cached entry (rbd), source asked every 60 s"),
                     (eng0, "CreateVolume, source asked on every hit"),
                     (engr, "CreateVolume growing the volume 1 -> 2 GiB"),
                     (cin, "Cinder hit: connect, open, snapshot, protect, clone, depth walk per volume (python3-rbd)"),
                     (flo, "librbd floor: rbd_clone3 of a protected snapshot"),
                     (flor, "librbd floor: clone + open + resize to 2 GiB + close")):
        if s:
            note = nr(s)
            if s is engr and flor:  # no goal of its own: the row shows what a resize adds
                note += "; / floor with resize %s" % fmt(ratio(p50(engr), p50(flor)))
            t.row("hit", label, s["p50"], s["p90"], "ms", note)
    for step in ("connect", "open", "snapshot", "protect", "clone", "depth", "close"):
        s = g("hit", "cinder " + step)
        if s:
            t.row("hit", "Cinder hit, step %s (connection per call)" % step, s["p50"], s["p90"],
                  "ms", "%s; source depth %s" % (nr(s), extra(cin, "source_depth")))
    t.goal(["hit"], "hit p50: engine / floor", ratio(p50(eng), p50(flo)), 1.15, "<=",
           inputs=[eng, flo])
    t.goal(["hit"], "hit p50 with the source asked on every hit: engine / floor",
           ratio(p50(eng0), p50(flo)), 1.5, "<=", inputs=[eng0, flo])
    t.goal(["hit"], "hit p50: Cinder / engine", ratio(p50(cin), p50(eng)), 3.0, ">=",
           inputs=[cin, eng])
    tool, rbdc = g("hit", "cachemgr create"), g("hit", "rbd clone")
    for s, label in ((tool, "cachemgr create, one process per volume"),
                     (rbdc, "rbd clone, one process per volume")):
        if s:
            t.row("hit (tool)", label, s["p50"], s["p90"], "ms", nr(s))
    t.goal(["hit"], "hit p50 through the tool: cachemgr create / rbd clone",
           ratio(p50(tool), p50(rbdc)), 1.5, "<=", inputs=[tool, rbdc])

    # --- burst
    for c in (1, 8, 32):
        e, f = g("burst", "engine c%d" % c), g("burst", "floor c%d" % c)
        for s, who in ((e, "engine"), (f, "librbd floor")):
            if s:
                t.row("burst", "%s: %d volumes, concurrency %d" % (who, extra(s, "count"), c),
                      s["p50"], s["p90"], "ms/volume",
                      "%s volumes/s" % fmt(extra(s, "volumes_per_s")))
        if c in (8, 32):  # c=1 is a row: one volume at a time is the hit's figure
            t.goal(["burst"], "burst c%d: engine / librbd floor volumes/s" % c,
                   ratio(extra(e, "volumes_per_s"), extra(f, "volumes_per_s")), 0.9, ">=",
                   inputs=[e, f])

    # --- hosts sharing a pool (volumes/s: one sample per run)
    he, hf = g("hosts", "engine 3x8"), g("hosts", "floor c24")
    for s, label in ((he, "engine: 3 hosts (own host_id and index, one pool) x 8 threads, one cached image"),
                     (hf, "librbd floor: 24 concurrent rbd_clone3")):
        if s:
            t.row("hosts", label, s["p50"], s["p90"], "volumes/s",
                  "median of %d runs of %s volumes; per volume p50 %s ms" % (
                      s["n"], extra(s, "count"), fmt(pct(extra(s, "volume_ms") or [], 50))))
    if he and hf:
        t.row("hosts", "engine / librbd floor at 24 concurrent volumes", ratio(p50(he), p50(hf)),
              float("nan"), "x", "medians of the same run; runs alternate which side goes first")
    t.goal(["hosts"], "hosts: 3 hosts x 8 / librbd floor at 24 concurrent volumes/s",
           ratio(p50(he), p50(hf)), 0.9, ">=", inputs=[he, hf])

    # --- miss
    # run.sh's images, whether or not they ran (every goal is in the table), and any other.
    labels = sorted({"raw-sparse", "raw-dense", "qcow2-sparse", "qcow2-dense"}
                    | {name.split(" ", 1)[1] for (sc, name) in series if sc == "miss"})
    for label in labels:
        e, c = g("miss", "engine " + label), g("miss", "cinder " + label)
        cc = g("miss", "cinder-curl " + label)
        if e:
            t.row("miss", "engine, %s" % label, e["p50"], e["p90"], "ms",
                  "fill p50 %s ms, %s" % (fmt(pct(extra(e, "fill_ms") or [], 50)), nr(e)))
        if c:
            t.row("miss", "Cinder full miss (download with hash check, convert, import, cache-entry clone), %s" % label,
                  c["p50"], c["p90"], "ms",
                  "download %s + convert %s + import %s + clone %s ms, %s" % tuple(
                      [fmt(pct(c.get("extra", {}).get(k + "_ms") or [], 50))
                       for k in ("download", "convert", "import", "clone")] + [nr(c)]))
        if cc:
            t.row("miss", "Cinder pipeline with curl (no checksum), %s 1 GiB" % label, cc["p50"],
                  cc["p90"], "ms", "download %s ms; Cinder / engine %s" % (
                      fmt(pct(cc["extra"].get("download_ms", []), 50)),
                      fmt(ratio(p50(cc), p50(e)))))
        target = 2.0 if label.startswith("raw") else 1.5
        t.goal(["miss"], "miss %s: Cinder / engine" % label, ratio(p50(c), p50(e)), target, ">=",
               inputs=[c, e])
        qi = g("miss_stage", "qemu img " + label)  # miss_stages.py names it so
        if qi:
            t.row("miss", "qemu-img convert -W -m 16 straight into RBD (no download), %s" % label,
                  qi["p50"], qi["p90"], "ms", "%s; engine's whole miss / this %s" % (
                      nr(qi), fmt(ratio(p50(e), p50(qi)))))
        if label != "raw-dense":
            continue
        # The pipeline: the dense raw miss against its slowest single stage, each stage
        # alone in the same repetitions (bench/miss_stages.py).
        stages = [(k, g("miss_stage", "%s %s" % (k, label)))
                  for k in ("download", "sha512", "rbd import")]
        for k, st in stages:
            if st:
                t.row("miss", "stage alone: %s, %s" % (k, label), st["p50"], st["p90"], "ms",
                      "%s; sum of the stages' medians %s ms" % (
                          nr(st), fmt(sum(p50(x) for _, x in stages if x))))
        have = [x for _, x in stages if x]
        slowest = max(have, key=p50) if len(have) == len(stages) else None
        t.goal(["miss", "miss_stage"],
               "pipeline %s: engine miss / its slowest single stage (download, sha512, rbd import)"
               % label,
               ratio(p50(e), p50(slowest)) if slowest else float("nan"), 1.3, "<=",
               inputs=[e] + [x for _, x in stages])
    imp_e, imp_r = g("import", "engine"), g("import", "rbd import")
    for s, label in ((imp_e, "Backend writer of a raw file, its own process, 16 in flight"),
                     (imp_r, "rbd import of the same file, 16 in flight")):
        if s:
            t.row("import", label, s["p50"], s["p90"], s.get("unit", "ms"), nr(s))
    t.goal(["import"], "import: rbd import / Backend import", ratio(p50(imp_r), p50(imp_e)), 1.0, ">=", inputs=[imp_r, imp_e])

    # --- instant miss: time to the first volume of an uncached image, and its import
    sizes = sorted({int(n.split()[-2]) for (sc, n) in series if sc == "instant"}) or [1, 4]
    for gib in sizes:
        ins, mis, cin = (g("instant", "%s first volume %d GiB" % (k, gib))
                         for k in ("instant", "miss", "cinder"))
        imp, rbd_imp = g("instant", "instant import %d GiB" % gib), g("instant", "rbd import %d GiB" % gib)
        for s, label in ((ins, "instant miss: `cachemgr create` until its volume is made"),
                         (mis, "normal miss: `cachemgr create` (fetch, hash, import, clone)"),
                         (cin, "Cinder's pipeline from the file (qemu-img info + convert, rbd import, snapshot, protect, clone)"),
                         (imp, "instant miss's background import (copy, hash, commit)"),
                         (rbd_imp, "rbd import of the same file")):
            if s:
                t.row("instant", "%s, %d GiB" % (label, gib), s["p50"], s["p90"], "ms", nr(s))
        t.goal(["instant"], "instant miss %d GiB: first volume (ms)" % gib, p50(ins), 1000, "<=",
               "ms", inputs=[ins])
        t.goal(["instant"], "instant miss %d GiB: normal miss / instant" % gib,
               ratio(p50(mis), p50(ins)), 5.0, ">=", inputs=[mis, ins])
        t.goal(["instant"], "instant miss %d GiB: Cinder / instant" % gib,
               ratio(p50(cin), p50(ins)), 10.0, ">=", inputs=[cin, ins])
        t.goal(["instant"], "instant miss %d GiB: rbd import / background import" % gib,
               ratio(p50(rbd_imp), p50(imp)), 0.5, ">=", inputs=[rbd_imp, imp])
        # Glance through the relay (run.sh passes its Glance): present when measured.
        gins, gimp, gmis = (g("instant", "glance %s %d GiB" % (k, gib))
                            for k in ("instant first volume", "instant import", "miss first volume"))
        for s, label in ((gins, "instant miss of a Glance image through the relay: first volume"),
                         (gimp, "its background import through the relay (copy, hash, commit)"),
                         (gmis, "normal miss of the same Glance image")):
            if s:
                t.row("instant", "%s, %d GiB" % (label, gib), s["p50"], s["p90"], "ms", nr(s))
        if gins:
            t.goal(["instant"], "instant miss %d GiB from Glance: first volume (ms)" % gib,
                   p50(gins), 1000, "<=", "ms", inputs=[gins])
            t.goal(["instant"], "instant miss %d GiB from Glance: normal miss / instant" % gib,
                   ratio(p50(gmis), p50(gins)), 5.0, ">=", inputs=[gmis, gins])

    # --- memory
    for (sc, name) in sorted(series):
        s = g(sc, name)
        if sc == "rss":
            t.row("memory", "peak RSS of one miss, %s image" % name[len("miss "):], s["p50"],
                  s["p90"], "MiB", "%s; bound %s MiB (queue_depth x 4 MiB object + 100 MiB)" % (
                      nr(s), fmt(extra(s, "bound_mib"))))
    for key in ("raw dense 4GiB", "qcow2 dense 4GiB"):
        s = g("rss", "miss " + key)
        t.goal(["rss"], "memory: peak RSS of a %s miss within the aio-window bound" % key, p50(s),
               extra(s, "bound_mib") or 164, "<=", " MiB", inputs=[s])

    # --- single flight
    sf, base = g("single_flight", "32 concurrent"), g("single_flight", "miss + 32 clones")
    for s, label in ((sf, "32 concurrent requests, one cold image"),
                     (base, "one miss + 32 clones, one after another")):
        if s:
            t.row("single flight", label, s["p50"], s["p90"], "ms", nr(s))
    t.goal(["single_flight"], "single flight: 32 concurrent / (miss + 32 clones)",
           ratio(p50(sf), p50(base)), 1.2, "<=", inputs=[sf, base])

    # --- index
    lk, sel, pl, rss = (g("index", n) for n in ("lookup", "select", "plan", "peak_rss"))
    n_entries = extra(lk, "entries") or extra(sel, "entries")
    if lk:
        t.row("index", "lookup, %s entries" % n_entries, lk["p50"], lk["p90"], "ms",
              "fill %s ms" % fmt(extra(lk, "fill_ms")))
    if sel:
        t.row("index", "eviction victim selection (read rows + plan)", sel["p50"], sel["p90"],
              "ms", "")
    if pl:
        t.row("index", "eviction policy alone", pl["p50"], pl["p90"], "ms", "")
    if rss:
        t.row("index", "peak RSS of the index benchmark", rss["p50"], rss["p90"], "MiB",
              "at start %s MiB" % fmt(extra(rss, "start_mib")))
    # Victim selection alone is a row, not a goal: the pass below is what operators run.
    # The index open and the library's eviction pass (local backend, source check off).
    op = g("index", "open")
    pd, pi, pc, pp, pe = (g("index", n) for n in ("pass_dry", "pass_idle", "pass_changed",
                                                   "pass_plan", "pass_evict"))
    n_pass = extra(pd, "entries") or extra(pe, "entries") or 100000
    if op:
        t.row("index", "Index::Open (quick_check), %s entries" % n_entries, op["p50"], op["p90"],
              "ms", "n=%d" % op["n"])
    for s, label in ((pd, "eviction pass, dry run, nothing to evict"),
                     (pi, "eviction pass, nothing to evict"),
                     (pc, "eviction pass, nothing to evict, the pool changed since the last"),
                     (pp, "eviction pass, dry run planning the evictions")):
        if s:
            t.row("index", "%s, %s entries" % (label, n_pass), s["p50"], s["p90"], "ms",
                  "n=%d" % s["n"])
    if pe:
        t.row("index", "eviction pass evicting %s of %s entries (pinned and busy first)"
              % (extra(pe, "evicted"), n_pass), pe["p50"], pe["p90"], "ms",
              "%s deferred, %s busy skipped, %s ms per eviction"
              % (extra(pe, "deferred"), extra(pe, "skipped_busy"), fmt(extra(pe, "ms_per_eviction"))))
    t.goal(["index"], "index: eviction pass with nothing to evict at %s entries" % n_pass,
           p50(pi), 1000, "<=", " ms", inputs=[pi])
    t.goal(["index"], "index: index open at %s entries" % (n_entries or 100000), p50(op), 200,
           "<=", " ms", inputs=[op])

    # --- local backend
    le, lq = g("local_hit", "engine"), g("local_hit", "qemu-img")
    for s, label in ((le, "CreateVolume on a cached entry (local, qcow2 overlay)"),
                     (lq, "qemu-img create -f qcow2 -b BASE, per volume")):
        if s:
            t.row("local hit", label, s["p50"], s["p90"], "ms", nr(s))
    t.goal(["local_hit"], "local hit p50: qemu-img / engine (engine at most 0.5x)",
           ratio(p50(lq), p50(le)), 2.0, ">=", inputs=[lq, le])
    for c in (1, 8, 32):
        e, q = g("local_burst", "engine c%d" % c), g("local_burst", "qemu-img c%d" % c)
        for s, who in ((e, "engine"), (q, "qemu-img create")):
            if s:
                t.row("local burst", "%s: %d volumes, concurrency %d" % (who, extra(s, "count"), c),
                      s["p50"], s["p90"], "ms/volume",
                      "%s volumes/s" % fmt(extra(s, "volumes_per_s")))
        if c == 8:  # the concurrency run.sh runs; c=1 is the hit series
            t.goal(["local_burst"], "local burst c%d: engine / qemu-img volumes/s" % c,
                   ratio(extra(e, "volumes_per_s"), extra(q, "volumes_per_s")), 2.0, ">=",
                   inputs=[e, q])

    # --- many hosts on one pool (bench/multihost_sim.sh)
    run = g("sim16", "run")
    if run:
        x = run["extra"]
        t.row("sim16", "%d hosts (processes, own host_id and index), one pool, %d images, max_count %d: creates/s"
              % (x["hosts"], x["images"], x["max_count"]), run["p50"], float("nan"), "creates/s",
              "%d creates in %d s, %d failed; plans %s" % (
                  x["creates"], x["wall_s"], x["failed"],
                  " ".join("%s %d" % kv for kv in sorted(x["plans"].items()))))
        for name, label in (("create hit", "create, hit (cached entry)"),
                            ("create miss", "create, miss (fill of a 2-9 MiB image)"),
                            ("pass", "evict pass that ran (wall, process)")):
            s = g("sim16", name)
            if s:
                note = "n=%d, p95 %s ms" % (s["n"], fmt(pct(s["samples"], 95)))
                if name == "create hit":
                    note += ("; %d not ready in the host's index (another host's fill, or an entry "
                             "to adopt) went through the image lock, lock wait p50 %s ms") % (
                                 x["waited"], fmt(x.get("wait_ms_p50")))
                if name == "pass":
                    note += "; %d ran, %d exit 5 (another host's pass), %d other exits" % (
                        x["passes"], x["busy"], x["pass_bad"])
                t.row("sim16", label, s["p50"], s["p90"], "ms", note)
        t.row("sim16", "misses per image vs its evictions", float(sum(x["misses"])), float("nan"),
              "misses", "image misses/evictions: %s; refills with no eviction before: %d" % (
                  " ".join("%d:%d/%d" % (k, m, e)
                           for k, (m, e) in enumerate(zip(x["misses"], x["evictions"]))),
                  x["refills_unexplained"]))
        st = x["state"]
        for name, tb in sorted(st["tables"].items()):
            t.row("sim16", "pool-wide table %s at the end (omap of cachemgr.table.%s)" % (name, name),
                  float(tb["keys"]), float("nan"), "keys", "%d bytes" % tb["bytes"])
        t.row("sim16", "lock objects (cachemgr.lock.*) at the end", float(st["lock_objects"]),
              float("nan"), "objects", "pool: %d entries, %d volumes, %d in the trash" % (
                  st["entries"], st["volumes"], st["trash"]))
        for name, label in (("create_hit", "one create, hit"), ("create_miss", "one create, miss"),
                            ("evict", "one pass, nothing to do"), ("delete", "one delete"),
                            ("rbd_clone", "a bare rbd clone of the entry's snapshot, the floor")):
            if name in x["ops"]:
                t.row("sim16", "OSD ops of %s (one host, quiet cluster)" % label,
                      float(x["ops"][name]), float("nan"), "ops",
                      "least of runs %s; idle 2 s: %s" % (
                          ",".join(map(str, x["ops_runs"][name])),
                          ",".join(map(str, x["ops_runs"].get("idle_2s", [])))))
    t.goal(["sim16"], "sim16: failed creates", float(run["extra"]["failed"]) if run else None,
           0, "<=", "", inputs=[run])
    t.goal(["sim16"], "sim16: passes that exit other than 0 or 5",
           float(run["extra"]["pass_bad"]) if run else None, 0, "<=", "", inputs=[run])
    t.goal(["sim16"], "sim16: refills of an image with no eviction before",
           float(run["extra"]["refills_unexplained"]) if run else None, 0, "<=", "",
           inputs=[run])
    return t


def add_cpu_rows(t, series, meta):
    """How many cores the dense raw miss and each of its single stages kept busy (the
    machine's busy CPU-seconds over the wall time, every process counted: Glance and the
    OSD run on the same cores). A miss that keeps every core busy is bound by the
    machine, not by a stage that waits on another."""
    steps = [st for st in meta.get("steps", [])
             if st["name"] == "miss engine raw-dense" and st.get("cpu_s") is not None]
    if steps:
        cpu = sorted(st["cpu_s"] for st in steps)[len(steps) // 2]
        wall = sorted(st["s"] for st in steps)[len(steps) // 2]
        t.row("miss", "machine CPU-seconds of the engine's raw-dense miss step (process start "
              "to exit)", cpu, float("nan"), "s",
              "median of %d; wall %s s, %s of %s cores busy" % (
                  len(steps), fmt(wall), fmt(cpu / wall if wall else float("nan")),
                  meta.get("nproc", "?")))
    for k in ("download", "sha512", "rbd import"):
        st = series.get(("miss_stage", "%s raw-dense" % k))
        c = (st or {}).get("extra", {}).get("cpu_s")
        if c:
            t.row("miss", "machine CPU-seconds of the stage alone: %s, raw-dense" % k,
                  pct(c, 50), pct(c, 90), "s", "n=%d; %s cores busy at its median wall" % (
                      len(c), fmt(pct(c, 50) * 1000.0 / st["p50"] if st["p50"] else float("nan"))))


def add_runtime_goal(t, meta):
    t.goal(["run"], "whole bench run (before the report)", float(meta.get("elapsed_s", "nan")),
           1200, "<=", " s")  # `make bench` under 20 minutes on 2 cores


def print_table(t, meta, out):
    w = out.write
    w("cachemgr bench  %s  nproc=%s  %s  (%s)  load %s -> %s\n\n" % (
        meta.get("date"), meta.get("nproc"), meta.get("cpu"), meta.get("commit"),
        meta.get("loadavg_start", "?"), meta.get("loadavg_end", "?")))
    w("| scenario | what | p50 | p90 | unit | note |\n|---|---|---:|---:|---|---|\n")
    for r in t.rows:
        w("| %s | %s | %s | %s | %s | %s |\n" % (r["scenario"], r["what"], fmt(r["p50"]),
                                               fmt(r["p90"]), r["unit"], r["note"]))
    w("\n| goal | measured | target | samples (rounds) | status |\n|---|---:|---|---|---|\n")
    for gl in t.goals:
        w("| %s | %s | %s | %s | %s |\n" % (gl["goal"], fmt(gl["value"]), gl["target"],
                                            inputs_text(gl), status_text(gl)))


def inputs_text(gl):
    """n (rounds) of each series a goal reads, "-" when it has none (or predates them)."""
    parts = []
    for i in gl.get("inputs") or []:
        parts.append("%d (%s)" % (i["n"], i["rounds"]) if i.get("rounds") else "%d" % i["n"])
    return ", ".join(parts) or "-"


def status_text(gl):
    return gl["status"] + (" (%s)" % gl["why"] if gl.get("why") else "")


def chart(series, png, workdir, gnuplot):
    """CDFs of per-volume latency: one panel per comparison, log x."""
    panels = [
        ("RBD hit: CreateVolume vs baselines",
         [("hit", "engine", "engine"), ("hit", "floor", "librbd clone floor"),
          ("hit", "cinder", "Cinder snap+protect+clone")]),
        ("RBD burst: per-volume latency",
         [("burst", "engine c%d" % c, "engine c=%d" % c) for c in (1, 8, 32)]
         + [("burst", "floor c%d" % c, "floor c=%d" % c) for c in (1, 32)]),
        ("Local backend: per-volume latency",
         [("local_hit", "engine", "engine hit"), ("local_hit", "qemu-img", "qemu-img create -b"),
          ("local_burst", "engine c8", "engine burst c=8"),
          ("local_burst", "qemu-img c8", "qemu-img burst c=8")]),
        ("Misses: engine vs Cinder's pipeline",
         [(sc, name, name) for (sc, name) in sorted(series) if sc == "miss"]),
    ]
    os.makedirs(workdir, exist_ok=True)
    script = ['set terminal pngcairo size 1400,1000 font "sans,10"',
              'set output "%s"' % png,
              "set multiplot layout 2,2",
              "set logscale x", "set grid", "set key bottom right font ',8'",
              "set ylabel 'fraction of volumes'", "set xlabel 'ms'", "set yrange [0:1]"]
    for pi, (title, lines) in enumerate(panels):
        plots = []
        for li, (sc, name, label) in enumerate(lines):
            s = series.get((sc, name))
            if not s or not s["samples"]:
                continue
            data = os.path.join(workdir, "cdf-%d-%d.dat" % (pi, li))
            v = sorted(x for x in s["samples"] if x > 0)
            with open(data, "w") as f:
                for i, x in enumerate(v):
                    f.write("%.6f %.6f\n" % (x, (i + 1) / len(v)))
            style = "linespoints pt 7 ps 0.6" if len(v) < 20 else "lines"
            plots.append("'%s' using 1:2 with %s lw 2 title '%s (p50 %s)'" % (
                data, style, label.replace("'", ""), fmt(s["p50"])))
        script.append("set title '%s'" % title.replace("'", "''"))  # gnuplot's quote escape
        if plots:
            script.append("plot " + ", ".join(plots))
        else:
            script.append("unset logscale x; set xrange [0:1]; plot 2 title 'not run'; "
                          "set logscale x; set autoscale x")
    script.append("unset multiplot")
    gp = os.path.join(workdir, "chart.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    subprocess.run([gnuplot, gp], check=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--in", dest="indir", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--png", help="the chart (gnuplot); none when not given")
    p.add_argument("--gnuplot", default="gnuplot")
    a = p.parse_args()
    with open(a.meta) as f:
        meta = json.load(f)
    try:
        series = load(a.indir)
    except ReportError as e:
        print("report: %s" % e, file=sys.stderr)
        return EXIT_INCONSISTENT
    t = build(series)
    add_cpu_rows(t, series, meta)
    add_runtime_goal(t, meta)
    any_failed = judge(t, meta)
    print_table(t, meta, sys.stdout)
    doc = {"meta": meta, "rows": t.rows, "goals": t.goals,
           "series": [{k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v)
                       for k, v in s.items() if k != "samples"}
                      | {"samples": [round(x, 4) for x in s["samples"]]}
                      for s in series.values()]}
    # NaN is not JSON: write null instead.
    text = json.dumps(doc, indent=1, allow_nan=True).replace("NaN", "null")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        f.write(text + "\n")
    chart_failed = False
    if a.png:
        try:
            chart(series, os.path.abspath(a.png), os.path.join(a.indir, "chart"), a.gnuplot)
        except (OSError, subprocess.CalledProcessError) as e:
            print("report: no chart: %s" % e, file=sys.stderr)
            chart_failed = True
    print("\nwrote %s%s" % (a.json, " and " + a.png if a.png and not chart_failed else ""))
    if any_failed:
        print("report: goals FAILED: %s" % "; ".join(
            gl["goal"] for gl in t.goals if gl["status"] == "FAILED"), file=sys.stderr)
        return EXIT_FAILED
    return 1 if chart_failed else 0


if __name__ == "__main__":
    sys.exit(main())
