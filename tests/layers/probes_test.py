#!/usr/bin/env python3
"""layers_upward_include: a layer cannot include the headers of a layer it may not use.

The probes are generated from the layering the build writes (map.json, from the LAYERS
lists of cmake/CachemgrLayers.cmake), so every layer gets them, and a new layer or folder
gets them without anyone writing a file:

  * for each layer L and each layer M that L may not use (above it, or beside it with
    no arrow), a probe that includes one header of each folder of M, and each public
    header of M, must fail, and only because that header is not found;
  * for each layer L, a control that includes one header of each folder and each public
    header of L and of every layer it may use must preprocess: every header it reaches
    is found.

Each probe is preprocessed as a source of L is: with the preprocessor and language flags
of L's real compile command (compile_commands.json). So a stray target_link_libraries (a
layer given a root it should not see) lets an upward probe find its header, and this
test fail.
What the real sources include, however they spell it, is sources_test.py's business.

Usage: probes_test.py BUILD_DIR [JOBS]
"""
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer_map import from_argv, preprocess_args  # noqa: E402


def headers_of(m, name):
    """One header of each folder of a layer (the first by name at the folder's top, a
    stable choice) and each of its public headers, as a source includes them."""
    out = []
    for folder, directory in m.layers[name]['folders'].items():
        first = sorted(f for f in os.listdir(directory) if f.endswith('.h'))
        if not first:
            raise SystemExit(f'layer {name}: no header at the top of {directory} to probe with')
        out.append(f'{folder}/{first[0]}')
    out += [f'cachemgr/{h}' for h in m.layers[name]['public_headers']]
    return out


def compile_batch(directory, flags, probes):
    """The preprocessor over a batch of probes of one layer, in one run (the driver goes
    on to the next file after one fails). Returns {probe: [its diagnostics]}.

    Preprocessing is all the include path decides: a header is found or it is not. The
    build compiles every header anyway, and parsing the engine's whole tree again for
    each control (or for each forbidden include that was found after all) would cost
    seconds apiece on a loaded machine."""
    r = subprocess.run(preprocess_args(flags) + probes, cwd=directory,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = {p: [] for p in probes}
    for line in r.stderr.splitlines():
        for p in probes:
            if line.startswith(p + ':') or line.startswith(f'In file included from {p}:'):
                out[p].append(line)
    if r.returncode != 0 and not any(out.values()):
        out[probes[0]].append(f'the compiler failed with nothing said of a probe:\n{r.stderr}')
    return out


def main():
    start = time.monotonic()
    m, jobs = from_argv(sys.argv, __doc__)
    scratch = tempfile.mkdtemp(prefix='layers_probes.')
    work, expect = [], {}  # expect[probe] = (header that must be missing, or None; text)
    for name in m.layers:
        directory, flags = m.flags(name)
        batch = []
        allowed = m.allowed(name)
        control = [h for other in m.layers if other in allowed for h in headers_of(m, other)]
        for other in m.layers:
            if other in allowed:
                continue
            for header in headers_of(m, other):
                case = re.sub(r'[^A-Za-z0-9]', '_', header)
                probe = os.path.join(scratch, f'{name}__includes_{other}__{case}.cpp')
                text = (f'// Layer {name} may not use layer {other}: this must fail.\n'
                        f'#include "{header}"\n')
                batch.append(probe)
                expect[probe] = (header, text)
        probe = os.path.join(scratch, f'{name}__control.cpp')
        text = (f'// Layer {name} may use these: this must preprocess.\n'
                + ''.join(f'#include "{h}"\n' for h in control))
        batch.append(probe)
        expect[probe] = (None, text)
        for probe in batch:
            with open(probe, 'w') as f:
                f.write(expect[probe][1])
        # The control, the longest, is a batch of its own so the workers share the load.
        work.append((directory, flags, batch[:-1]))
        work.append((directory, flags, batch[-1:]))
    work = [w for w in work if w[2]]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda w: compile_batch(*w), work))

    failures, upward, controls = [], 0, 0
    for result in results:
        for probe, diagnostics in result.items():
            header, text = expect[probe]
            name = os.path.basename(probe)
            said = '\n'.join(diagnostics)
            if header is None:
                controls += 1
                if diagnostics:
                    failures.append(f'{name}: must preprocess with its layer\'s flags, but:\n'
                                    f'{text}{said}')
                continue
            upward += 1
            errors = [d for d in diagnostics if 'error' in d]
            missing = [d for d in errors if f'{header}: No such file or directory' in d
                       or f"'{header}' file not found" in d]
            if not errors:
                failures.append(f'{name}: an include the layering forbids was found: the '
                                f'layer\'s include path shows {header} '
                                f'(cmake/CachemgrLayers.cmake)\n{text}')
            elif len(missing) != len(errors):
                failures.append(f'{name}: failed, but not (only) for want of {header}:\n{said}')
    for f in failures:
        print(f'FAIL {f}')
    print(f'{upward} forbidden includes probed, {controls} controls preprocessed, '
          f'{len(failures)} problems, {time.monotonic() - start:.1f} s')
    if not failures:
        for f in os.listdir(scratch):
            os.unlink(os.path.join(scratch, f))
        os.rmdir(scratch)
    else:
        print(f'the probes are in {scratch}')
    return 1 if failures or not upward or controls != len(m.layers) else 0


if __name__ == '__main__':
    sys.exit(main())
