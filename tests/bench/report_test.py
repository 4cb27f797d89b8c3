#!/usr/bin/python3
"""bench/report.py and bench/readme_table.py on fabricated result dirs (no cluster).

What a reader of the bench table relies on: a failed step of run.sh fails the goals it
feeds (never "met"), rounds of a series are kept apart and counted, a quick or partial
run says "not run" only for what it did not ask for, and the README table carries every
goal of the JSON.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "bench")
sys.path.insert(0, BENCH)
import step_scenarios  # noqa: E402

PY = sys.executable


def series(scenario, name, samples, unit="ms", **extra):
    return {"scenario": scenario, "name": name, "unit": unit, "samples": samples,
            "extra": extra}


class Run:
    """A fabricated run: result files in out/, meta.json, the report's JSON."""

    def __init__(self, tmp, files, failed=(), scenarios="hit local", elapsed=100):
        self.dir = tmp
        self.out = os.path.join(tmp, "out")
        os.makedirs(self.out)
        for fname, ss in files.items():
            with open(os.path.join(self.out, fname), "w") as f:
                json.dump({"series": ss}, f)
        self.meta = os.path.join(tmp, "meta.json")
        with open(self.meta, "w") as f:
            json.dump({"date": "2026-12-01T00:00:00Z", "commit": "abc1234", "nproc": 2,
                       "quick": False, "scenarios": scenarios, "reps": 2, "miss_reps": 5,
                       "elapsed_s": elapsed, "failed": list(failed),
                       "loadavg_start": "0.50 0.40 0.30", "loadavg_end": "1.50 1.00 0.70"}, f)
        self.json = os.path.join(tmp, "results", "latest.json")

    def report(self):
        p = subprocess.run([PY, os.path.join(BENCH, "report.py"), "--in", self.out,
                            "--meta", self.meta, "--json", self.json],
                           capture_output=True, text=True, timeout=60)
        self.stderr = p.stderr
        if os.path.exists(self.json):
            with open(self.json) as f:
                self.doc = json.load(f)
        return p.returncode

    def goal(self, prefix):
        found = [g for g in self.doc["goals"] if g["goal"].startswith(prefix)]
        assert len(found) == 1, (prefix, [g["goal"] for g in self.doc["goals"]])
        return found[0]


# Hit: engine 10 ms against a floor of 9 ms (1.11x, met) and Cinder at 100 ms (met);
# local: engine 2 ms against qemu-img 5 ms (engine 0.4x, met), burst engine 2.5x (met).
def good_files():
    return {
        "hit-engine-1.json": [series("hit", "engine", [10.0] * 5)],
        "hit-engine-2.json": [series("hit", "engine", [10.0] * 5)],
        "hit-floor-1.json": [series("hit", "floor", [9.0] * 5)],
        "hit-floor-2.json": [series("hit", "floor", [9.0] * 5)],
        "hit-cinder.json": [series("hit", "cinder", [100.0] * 3)],
        "hit-engine-every-1.json": [series("hit", "engine source every hit", [12.0] * 5)],
        "hit-tool.json": [series("hit", "cachemgr create", [150.0] * 3),
                          series("hit", "rbd clone", [120.0] * 3)],
        "local-hit-engine.json": [series("local_hit", "engine", [2.0] * 4)],
        "local-hit-qemu.json": [series("local_hit", "qemu-img", [5.0] * 4)],
        "local-burst-engine-c8.json": [series("local_burst", "engine c8", [1.0] * 4,
                                              count=4, volumes_per_s=500.0)],
        "local-burst-qemu-c8.json": [series("local_burst", "qemu-img c8", [1.0] * 4,
                                            count=4, volumes_per_s=200.0)],
    }


class ReportTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def test_the_pipeline_goal_is_the_miss_against_its_slowest_stage(self):
        files = {"miss-engine.json": [series("miss", "engine raw-dense", [1200.0] * 3)],
                 "miss-cinder.json": [series("miss", "cinder raw-dense", [3000.0] * 3)]}
        for k, ms in (("download", 500.0), ("sha512", 1000.0), ("rbd import", 800.0)):
            files["stage-%s.json" % k.replace(" ", "-")] = [
                series("miss_stage", "%s raw-dense" % k, [ms] * 3)]
        files["miss-c.json"] = [series("miss", "engine qcow2c-dense", [900.0] * 3),
                                series("miss", "cinder qcow2c-dense", [2000.0] * 3)]
        files["stage-qemu.json"] = [series("miss_stage", "qemu img qcow2c-dense", [1800.0] * 3)]
        r = Run(self.tmp, files, scenarios="miss")
        r.report()
        rows = [row for row in r.doc["rows"] if row["what"].startswith("qemu-img convert -W")]
        self.assertEqual(len(rows), 1)  # miss_stages.py's name for the stage is found
        self.assertIn("engine's whole miss / this 0.5", rows[0]["note"])
        g = r.goal("pipeline raw-dense")
        self.assertAlmostEqual(g["value"], 1.2)  # 1,200 / the slowest, sha512's 1,000
        self.assertEqual(g["status"], "met")
        self.assertEqual(len(g["inputs"]), 4)
        # A stage missing: no figure, and the run asked for it, so FAILED, never met.
        os.remove(os.path.join(r.out, "stage-sha512.json"))
        r.report()
        self.assertEqual(r.goal("pipeline raw-dense")["status"], "FAILED")

    def test_clean_run_meets_its_goals_and_leaves_the_rest_not_run(self):
        r = Run(self.tmp, good_files())
        self.assertEqual(r.report(), 0, r.stderr)
        for prefix in ("hit p50: engine / floor", "hit p50: Cinder / engine",
                       "local hit p50", "local burst c8", "whole bench run"):
            self.assertEqual(r.goal(prefix)["status"], "met", prefix)
        # Asked for neither: declared all the same, as not run.
        self.assertEqual(r.goal("miss raw-dense")["status"], "not run")
        self.assertEqual(r.goal("sim16: failed creates")["status"], "not run")

    def test_a_failed_step_fails_the_goals_of_its_scenario_only(self):
        r = Run(self.tmp, good_files(), failed=["hit floor"])
        self.assertEqual(r.report(), 3)
        g = r.goal("hit p50: engine / floor")
        self.assertEqual(g["status"], "FAILED")  # its figures alone would say met
        self.assertIn("hit floor", g["why"])
        self.assertEqual(r.goal("hit p50: Cinder / engine")["status"], "FAILED")
        self.assertEqual(r.goal("local hit p50")["status"], "met")
        self.assertIn("hit p50: engine / floor", r.stderr)

    def test_a_failed_miss_round_fails_the_memory_goals_it_feeds(self):
        r = Run(self.tmp, good_files(), failed=["miss engine raw-dense"],
                scenarios="hit local miss rss")
        self.assertEqual(r.report(), 3)
        self.assertEqual(r.goal("miss raw-dense")["status"], "FAILED")
        self.assertEqual(r.goal("memory: peak RSS of a raw dense 4GiB")["status"], "FAILED")
        self.assertEqual(r.goal("hit p50: engine / floor")["status"], "met")

    def test_an_unknown_step_fails_every_goal(self):
        r = Run(self.tmp, good_files(), failed=["some new step"])
        self.assertEqual(r.report(), 3)
        self.assertTrue(all(g["status"] == "FAILED" for g in r.doc["goals"]))

    def test_a_scenario_asked_for_without_figures_is_failed_not_not_run(self):
        files = {k: v for k, v in good_files().items() if not k.startswith("local-hit")}
        r = Run(self.tmp, files)
        self.assertEqual(r.report(), 3)
        self.assertEqual(r.goal("local hit p50")["status"], "FAILED")
        r2 = Run(os.path.join(self.tmp, "b"), files, scenarios="hit")
        self.assertEqual(r2.report(), 0, r2.stderr)
        self.assertEqual(r2.goal("local hit p50")["status"], "not run")

    def test_rounds_are_kept_apart_and_counted(self):
        files = good_files()
        files["hit-engine-2.json"] = [series("hit", "engine", [30.0] * 5)]
        r = Run(self.tmp, files)
        r.report()
        s = [s for s in r.doc["series"] if (s["scenario"], s["name"]) == ("hit", "engine")][0]
        self.assertEqual(s["n"], 10)
        self.assertEqual([(x["file"], x["n"], x["p50"]) for x in s["rounds"]],
                         [("hit-engine-1.json", 5, 10.0), ("hit-engine-2.json", 5, 30.0)])
        g = r.goal("hit p50: engine / floor")
        self.assertEqual(g["inputs"][0], {"series": "hit/engine", "n": 10, "rounds": 2})

    def test_the_same_series_twice_in_one_file_is_an_error(self):
        files = good_files()
        files["hit-engine-1.json"] *= 2
        r = Run(self.tmp, files)
        self.assertEqual(r.report(), 2)
        self.assertIn("twice in one file", r.stderr)

    def test_rounds_of_different_units_are_an_error(self):
        files = good_files()
        files["hit-engine-2.json"] = [series("hit", "engine", [1.0], unit="s")]
        r = Run(self.tmp, files)
        self.assertEqual(r.report(), 2)
        self.assertIn("unit", r.stderr)


class StepTableTest(unittest.TestCase):
    def test_every_step_of_run_sh_feeds_a_known_scenario(self):
        with open(os.path.join(BENCH, "run.sh")) as f:
            text = f.read()
        # `step NAME LIMIT ...` with NAME quoted or a bare word; $vars become a value.
        names = [q or w for q, w in
                 re.findall(r'(?:^|[\s;&|(])step\s+(?:"([^"]+)"|([\w.+-]+))\s+\d+', text)]
        self.assertGreaterEqual(len(names), 15, names)
        # Every line that calls step is one of them (a name the pattern above misses, such
        # as one in single quotes, would otherwise go unchecked).
        calls = re.findall(r"^\s*(?:\w+=\S*\s+)*step\s+[^\s(]", text, re.M)
        self.assertEqual(len(calls), len(names), calls)
        self.assertIn("hit engine", names)
        known = {s for v in step_scenarios.RUN_SCENARIOS.values() for s in v}
        for name in names:
            expanded = re.sub(r"\$\{?\w+\}?", "x1", name)
            scs = step_scenarios.scenarios_of(expanded)
            self.assertIsNotNone(scs, "run.sh step %r is not in bench/step_scenarios.py" % name)
            self.assertLessEqual(set(scs), known, name)

    def test_unknown_names_map_to_nothing(self):
        self.assertIsNone(step_scenarios.scenarios_of("hit engine extra"))
        self.assertEqual(step_scenarios.scenarios_of("burst floor c32"), ["burst"])


class ReadmeTableTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name
        self.readme = os.path.join(self.tmp, "README.md")
        with open(self.readme, "w") as f:
            f.write("# x\n\nbefore\n<!-- bench-table:begin -->\nold table\n"
                    "<!-- bench-table:end -->\nafter\n")

    def tearDown(self):
        self._tmp.cleanup()

    def table(self, json_path, *args):
        return subprocess.run([PY, os.path.join(BENCH, "readme_table.py"), "--json", json_path,
                               "--readme", self.readme, *args],
                              capture_output=True, text=True, timeout=60)

    def test_every_goal_of_the_json_with_its_status_and_the_run(self):
        r = Run(os.path.join(self.tmp, "run"), good_files(), failed=["hit floor"])
        r.report()
        self.assertEqual(self.table(r.json, "--check").returncode, 1)  # stale: says so
        self.assertEqual(self.table(r.json).returncode, 0)
        with open(self.readme) as f:
            text = f.read()
        self.assertNotIn("old table", text)
        self.assertTrue(text.startswith("# x\n\nbefore\n") and text.endswith("after\n"))
        for g in r.doc["goals"]:
            line = [ln for ln in text.splitlines() if ln.startswith("| %s |" % g["goal"])]
            self.assertEqual(len(line), 1, g["goal"])
            self.assertIn(g["status"], line[0])
        self.assertIn("| hit p50: engine / floor | 1.11 | <= 1.15x | 10 (2), 10 (2) | **FAILED**",
                      text)
        for fact in ("abc1234", "2026-12-01", "0.50 0.40 0.30", "1.50 1.00 0.70",
                     "failed steps: hit floor", "](run/results/latest.png)"):
            self.assertIn(fact, text)
        self.assertEqual(self.table(r.json, "--check").returncode, 0)  # and now it is current

    def test_a_json_older_than_goal_scenarios_with_a_failed_step_shows_every_goal_failed(self):
        old = os.path.join(self.tmp, "old.json")
        with open(old, "w") as f:
            json.dump({"meta": {"failed": ["hit floor"], "scenarios": "hit"}, "rows": [],
                       "series": [dict(series("hit", "engine", [10.0]), n=1)],
                       "goals": [{"goal": "hit p50: engine / floor", "value": 1.0,
                                  "target": "<= 1.3x", "status": "met"},
                                 {"goal": "burst c1: engine volumes/s", "value": None,
                                  "target": ">= 100 vol/s", "status": "NOT RUN"}]}, f)
        self.assertEqual(self.table(old).returncode, 0)
        with open(self.readme) as f:
            text = f.read()
        self.assertIn("| hit p50: engine / floor | 1.00 | <= 1.3x | 1 | **FAILED**", text)
        self.assertIn("| burst c1: engine volumes/s | - | >= 100 vol/s | - | **FAILED**", text)
        self.assertNotIn("| met", text)

    def test_a_readme_without_the_region_is_refused(self):
        r = Run(os.path.join(self.tmp, "run"), good_files())
        r.report()
        with open(self.readme, "w") as f:
            f.write("# x\n")
        p = self.table(r.json)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bench-table:begin", p.stderr)

    def test_the_committed_readme_is_what_the_committed_json_says(self):
        p = subprocess.run([PY, os.path.join(BENCH, "readme_table.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    unittest.main()
