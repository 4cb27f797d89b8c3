"""Which scenarios each step of bench/run.sh feeds, so a failed step fails their goals.

run.sh names every measurement with `step NAME LIMIT CMD...`; a step that fails or times
out is listed in meta.json's "failed". report.py marks every goal that reads a scenario
fed by a failed step FAILED (whatever its figures say), and every goal FAILED when a
failed step's name is not in this table (an unknown step could have fed anything).

STEPS: (pattern, scenarios) pairs. A pattern is an fnmatch pattern of the step's name as
run.sh prints it (its $variables expanded, so `burst engine c$c` is `burst engine c*`);
a name may match several patterns and then feeds all their scenarios. Scenarios are the
`scenario` field of the result series (hit, local_hit, single_flight...).
tests/bench/report_test.py checks that every `step` of run.sh matches a pattern here:
a new step needs its line here.

RUN_SCENARIOS: run.sh's own scenario names (BENCH_ONLY, meta.json's "scenarios") to the
series scenarios they produce; a goal whose scenarios were not asked for is "not run".
"""
import fnmatch

STEPS = [
    ("hit engine", ["hit"]),
    ("hit floor", ["hit"]),
    ("hit cinder", ["hit"]),
    ("hit engine source every hit", ["hit"]),
    ("hit engine resize", ["hit"]),
    ("hit floor resize", ["hit"]),
    ("hit tool", ["hit"]),
    ("burst engine c*", ["burst"]),
    ("burst floor c*", ["burst"]),
    ("hosts engine 3x8 run *", ["hosts"]),
    ("hosts floor c24 run *", ["hosts"]),
    # The engine's miss also writes the peak RSS series of the dense images.
    ("miss engine *", ["miss", "rss"]),
    ("miss cinder *", ["miss"]),
    ("miss stages *", ["miss_stage"]),
    ("rss raw *", ["rss"]),
    ("rss qcow2 *", ["rss"]),
    ("single flight", ["single_flight"]),
    ("miss + 32 clones", ["single_flight"]),
    ("index", ["index"]),
    ("local hit *", ["local_hit"]),
    ("local burst *", ["local_burst"]),
    ("import", ["import"]),
    ("digest", ["digest"]),
    ("sim16", ["sim16"]),
    ("instant", ["instant"]),
]

RUN_SCENARIOS = {
    "hit": ["hit"],
    "burst": ["burst"],
    "hosts": ["hosts"],
    "miss": ["miss", "miss_stage"],  # its RSS series only with rss asked for too
    "rss": ["rss"],
    "flight": ["single_flight"],
    "index": ["index"],
    "local": ["local_hit", "local_burst"],
    "import": ["import"],
    "digest": ["digest"],
    "sim16": ["sim16"],
    "instant": ["instant"],
}


def scenarios_of(step):
    """The scenarios a step feeds, or None when no pattern knows the step."""
    found = []
    for pattern, scenarios in STEPS:
        if fnmatch.fnmatchcase(step, pattern):
            found += [s for s in scenarios if s not in found]
    return found or None


def requested(meta_scenarios):
    """Series scenarios a run asked for (meta.json's "scenarios": a string or a list);
    None when the run does not say, which counts as everything."""
    if meta_scenarios is None:
        return None
    names = meta_scenarios.split() if isinstance(meta_scenarios, str) else list(meta_scenarios)
    out = set()
    for n in names:
        out.update(RUN_SCENARIOS.get(n, [n]))
    return out
