#!/usr/bin/python3
"""Merges the result files of one bench run into the table, latest.json and the chart.

usage: report.py --in DIR --meta META.json --json OUT.json --png OUT.png [--gnuplot gnuplot]

Every number in a ratio comes from the same run. A goal whose inputs are missing (a
scenario that did not run) is reported as "not run", never as met.
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    rank = p / 100.0 * (len(v) - 1)
    lo, hi = int(math.floor(rank)), int(math.ceil(rank))
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def load(indir):
    series = {}
    for path in sorted(glob.glob(os.path.join(indir, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        for s in doc.get("series", []):
            key = (s["scenario"], s["name"])
            if key in series:  # several files may add samples to one series
                series[key]["samples"] += s["samples"]
                for k, v in s.get("extra", {}).items():
                    if isinstance(v, list):
                        series[key]["extra"].setdefault(k, []).extend(v)
            else:
                series[key] = s
    for s in series.values():
        s["p50"] = pct(s["samples"], 50)
        s["p90"] = pct(s["samples"], 90)
        s["n"] = len(s["samples"])
    return series


class Table:
    def __init__(self):
        self.rows = []
        self.goals = []

    def row(self, scenario, what, p50, p90, unit, note=""):
        self.rows.append({"scenario": scenario, "what": what, "p50": p50, "p90": p90,
                          "unit": unit, "note": note})

    def goal(self, text, value, target, cmp, unit="x"):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            status = "NOT RUN"
        else:
            ok = value <= target if cmp == "<=" else value >= target
            status = "met" if ok else "NOT MET"
        self.goals.append({"goal": text, "value": value, "target": "%s %s%s" % (cmp, target, unit),
                           "status": status})


def fmt(x, digits=None):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return "%.*f" % (digits, x)


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
    for s, label in ((eng, "CreateVolume on a cached entry (rbd)"),
                     (cin, "Cinder hit: snapshot + protect + clone (python3-rbd)"),
                     (flo, "librbd floor: rbd_clone3 of a protected snapshot")):
        if s:
            t.row("hit", label, s["p50"], s["p90"], "ms", "n=%d" % s["n"])
    t.goal("hit p50: engine / floor", ratio(p50(eng), p50(flo)), 1.3, "<=")
    t.goal("hit p50: Cinder / engine", ratio(p50(cin), p50(eng)), 3.0, ">=")

    # --- burst
    for c in (1, 8, 32):
        e, f = g("burst", "engine c%d" % c), g("burst", "floor c%d" % c)
        for s, who in ((e, "engine"), (f, "librbd floor")):
            if s:
                t.row("burst", "%s: %d volumes, concurrency %d" % (who, extra(s, "count"), c),
                      s["p50"], s["p90"], "ms/volume",
                      "%s volumes/s" % fmt(extra(s, "volumes_per_s")))
        t.goal("burst c%d: engine volumes/s" % c, extra(e, "volumes_per_s") if e else None,
               100, ">=", " vol/s")

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

    # --- miss
    labels = sorted({name.split(" ", 1)[1] for (sc, name) in series if sc == "miss"})
    for label in labels:
        e, c = g("miss", "engine " + label), g("miss", "cinder " + label)
        cc = g("miss", "cinder-curl " + label)
        if e:
            t.row("miss", "engine, %s 1 GiB" % label, e["p50"], e["p90"], "ms",
                  "fill p50 %s ms, n=%d" % (fmt(pct(extra(e, "fill_ms") or [], 50)), e["n"]))
        if c:
            t.row("miss", "Cinder pipeline (glanceclient download, checksum verified), %s 1 GiB" % label, c["p50"], c["p90"], "ms",
                  "download %s + convert %s + import %s ms" % (
                      fmt(pct(c["extra"].get("download_ms", []), 50)),
                      fmt(pct(c["extra"].get("convert_ms", []), 50)),
                      fmt(pct(c["extra"].get("import_ms", []), 50))))
        if cc:
            t.row("miss", "Cinder pipeline with curl (no checksum), %s 1 GiB" % label, cc["p50"],
                  cc["p90"], "ms", "download %s ms; Cinder / engine %s" % (
                      fmt(pct(cc["extra"].get("download_ms", []), 50)),
                      fmt(ratio(p50(cc), p50(e)))))
        target = 2.0 if label.startswith("raw") else 1.5
        t.goal("miss %s: Cinder / engine" % label, ratio(p50(c), p50(e)), target, ">=")
    imp_e, imp_r = g("import", "engine"), g("import", "rbd import")
    for s, label in ((imp_e, "Backend import of a raw file"), (imp_r, "rbd import of the same file")):
        if s:
            t.row("import", label, s["p50"], s["p90"], s.get("unit", "ms"), "n=%d" % s["n"])
    if imp_e or imp_r:
        t.goal("import: rbd import / Backend import", ratio(p50(imp_r), p50(imp_e)), 1.0, ">=")

    # --- memory
    for key in ("raw 1GiB", "qcow2 1GiB", "qcow2 4GiB"):
        s = g("rss", "miss " + key)
        if s:
            t.row("memory", "peak RSS of one miss, %s image" % key, s["p50"], s["p90"], "MiB",
                  "bound %s MiB (queue_depth x 4 MiB object + 100 MiB)" % fmt(extra(s, "bound_mib")))
    r1, r4 = g("rss", "miss qcow2 1GiB"), g("rss", "miss qcow2 4GiB")
    t.goal("memory: peak RSS 4 GiB / 1 GiB image (qcow2)", ratio(p50(r4), p50(r1)), 1.25, "<=")
    for key in ("raw 1GiB", "qcow2 4GiB"):
        s = g("rss", "miss " + key)
        t.goal("memory: peak RSS %s within the window bound" % key, p50(s),
               extra(s, "bound_mib") or 164, "<=", " MiB")

    # --- single flight
    sf, base = g("single_flight", "32 concurrent"), g("single_flight", "miss + 32 clones")
    for s, label in ((sf, "32 concurrent requests, one cold image"),
                     (base, "one miss + 32 clones, one after another")):
        if s:
            t.row("single flight", label, s["p50"], s["p90"], "ms", "n=%d" % s["n"])
    t.goal("single flight: 32 concurrent / (miss + 32 clones)", ratio(p50(sf), p50(base)),
           1.2, "<=")

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
    t.goal("index: victim selection p50 at %s entries" % (n_entries or 100000), p50(sel), 50, "<=", " ms")
    # The index open and the library's eviction pass (local backend, source check off).
    op = g("index", "open")
    pd, pi, pp, pe = (g("index", n) for n in ("pass_dry", "pass_idle", "pass_plan", "pass_evict"))
    n_pass = extra(pd, "entries") or extra(pe, "entries") or 100000
    if op:
        t.row("index", "Index::Open (quick_check), %s entries" % n_entries, op["p50"], op["p90"],
              "ms", "n=%d" % op["n"])
    for s, label in ((pd, "eviction pass, dry run, nothing to evict"),
                     (pi, "eviction pass, nothing to evict"),
                     (pp, "eviction pass, dry run planning the evictions")):
        if s:
            t.row("index", "%s, %s entries" % (label, n_pass), s["p50"], s["p90"], "ms",
                  "n=%d" % s["n"])
    if pe:
        t.row("index", "eviction pass evicting %s of %s entries (pinned and busy first)"
              % (extra(pe, "evicted"), n_pass), pe["p50"], pe["p90"], "ms",
              "%s deferred, %s busy skipped, %s ms per eviction"
              % (extra(pe, "deferred"), extra(pe, "skipped_busy"), fmt(extra(pe, "ms_per_eviction"))))
    t.goal("index: eviction pass with nothing to evict at %s entries" % n_pass, p50(pi), 1000,
           "<=", " ms")
    t.goal("index: index open at %s entries" % (n_entries or 100000), p50(op), 200, "<=", " ms")

    # --- local backend
    le, lq = g("local_hit", "engine"), g("local_hit", "qemu-img")
    for s, label in ((le, "CreateVolume on a cached entry (local, qcow2 overlay)"),
                     (lq, "qemu-img create -f qcow2 -b BASE, per volume")):
        if s:
            t.row("local hit", label, s["p50"], s["p90"], "ms", "n=%d" % s["n"])
    if le or lq:
        t.goal("local hit p50: qemu-img / engine", ratio(p50(lq), p50(le)), 1.0, ">=")
    for c in (1, 8, 32):
        e, q = g("local_burst", "engine c%d" % c), g("local_burst", "qemu-img c%d" % c)
        for s, who in ((e, "engine"), (q, "qemu-img create")):
            if s:
                t.row("local burst", "%s: %d volumes, concurrency %d" % (who, extra(s, "count"), c),
                      s["p50"], s["p90"], "ms/volume",
                      "%s volumes/s" % fmt(extra(s, "volumes_per_s")))
        if e and q:
            t.goal("local burst c%d: engine / qemu-img volumes/s" % c,
                   ratio(extra(e, "volumes_per_s"), extra(q, "volumes_per_s")), 1.0, ">=")

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
    t.goal("sim16: failed creates", float(run["extra"]["failed"]) if run else None, 0, "<=", "")
    t.goal("sim16: passes that exit other than 0 or 5", float(run["extra"]["pass_bad"]) if run else None,
           0, "<=", "")
    t.goal("sim16: refills of an image with no eviction before",
           float(run["extra"]["refills_unexplained"]) if run else None, 0, "<=", "")
    return t


def add_runtime_goal(t, meta):
    t.goal("whole bench run (before the report)", float(meta.get("elapsed_s", "nan")), 900, "<=",
           " s")


def print_table(t, meta, out):
    w = out.write
    w("cachemgr bench  %s  nproc=%s  %s  (%s)  load %s -> %s\n\n" % (
        meta.get("date"), meta.get("nproc"), meta.get("cpu"), meta.get("commit"),
        meta.get("loadavg_start", "?"), meta.get("loadavg_end", "?")))
    w("| scenario | what | p50 | p90 | unit | note |\n|---|---|---:|---:|---|---|\n")
    for r in t.rows:
        w("| %s | %s | %s | %s | %s | %s |\n" % (r["scenario"], r["what"], fmt(r["p50"]),
                                               fmt(r["p90"]), r["unit"], r["note"]))
    w("\n| goal | measured | target | status |\n|---|---:|---|---|\n")
    for gl in t.goals:
        w("| %s | %s | %s | %s |\n" % (gl["goal"], fmt(gl["value"]), gl["target"], gl["status"]))


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
        ("Miss of a 1 GiB image: engine vs Cinder pipeline",
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
        script.append("set title '%s'" % title)
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
    p.add_argument("--png", required=True)
    p.add_argument("--gnuplot", default="gnuplot")
    a = p.parse_args()
    with open(a.meta) as f:
        meta = json.load(f)
    series = load(a.indir)
    t = build(series)
    add_runtime_goal(t, meta)
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
    chart(series, os.path.abspath(a.png), os.path.join(a.indir, "chart"), a.gnuplot)
    print("\nwrote %s and %s" % (a.json, a.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
