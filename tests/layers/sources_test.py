#!/usr/bin/env python3
"""layers_sources: every real source and header of every layer keeps to the layering.

The include roots of cmake/CachemgrLayers.cmake stop an upward include written the usual
way ("engine/naming.h" from storage), but a quoted include is looked up first in the
including file's own directory, and each root's folders are symbolic links, so
"storage/../cachemgr/src/engine/naming.h", "../../cachemgr/src/engine/naming.h" or an
absolute path would still compile. The probes (probes_test.py) cannot see those: they
are in the sources. So this test reads the sources themselves:

  1. the real include path: each layer's compile commands put on it only the roots of
     layers its declared LAYERS allow (a stray target_link_libraries shows up here);
  2. the compiler's own answer: the preprocessor with each source's real compile command
     (-H: every file it opens); every project header it reads belongs to an allowed layer;
  3. every file in every layer folder, headers and unbuilt sources included: no include
     contains ".." or is absolute; a quoted include resolves (own directory first, then
     the layer's include path, as the compiler does) to a header of an allowed layer; an
     angle include never names a project header.

Usage: sources_test.py BUILD_DIR [JOBS]
"""
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer_map import from_argv, include_dirs, preprocess_args, strip_command  # noqa: E402

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]*)[>"]')


def check_include_paths(m, errors):
    """1: the roots on each layer's real include path."""
    roots = {os.path.realpath(layer['root']): name for name, layer in m.layers.items()}
    for name in m.layers:
        extra = m.reachable(name) - m.allowed(name)
        if extra:
            errors.append(f'layer {name} links {sorted(extra)} (cmake/CachemgrLayers.cmake), '
                          f'which its LAYERS do not allow')
    seen = set()
    for layer, entry in m.layer_commands():
        for d in include_dirs(strip_command(entry), entry['directory']):
            other = roots.get(os.path.realpath(d))
            if other and other not in m.allowed(layer) and (layer, other) not in seen:
                seen.add((layer, other))
                errors.append(f'{entry["file"]} (layer {layer}) is compiled with the root of '
                              f'layer {other} on its include path: {d}')


def depends(directory, flags, sources, scratch):
    """What the compiler reads for a batch of sources sharing one command line: one
    preprocessor run over a unit that includes them all (each by its own path, so their
    quoted includes still start from their own directory), -H naming every file opened
    and its depth. One run per batch: the system headers, by far the most of the work,
    are read once, which keeps the test fast on a loaded machine. Returns
    {source: [headers first read under it]}."""
    unit = os.path.join(scratch, f'unit{len(os.listdir(scratch))}.cpp')
    with open(unit, 'w') as f:
        f.writelines(f'#include "{src}"\n' for src in sources)
    args = preprocess_args(flags) + ['-H', '-o', os.devnull, unit]
    r = subprocess.run(args, cwd=directory, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr
    out, current = {}, None
    for line in r.stderr.splitlines():
        match = re.match(r'^(\.+) (.*)$', line)
        if not match:
            continue  # "Multiple include guards may be useful for:" and its list
        path = os.path.join(directory, match.group(2))
        if len(match.group(1)) == 1:
            current = os.path.realpath(path)
            out[current] = []
        elif current is not None:
            out[current].append(path)
    return out, ''


def check_compiler_deps(m, jobs, errors):
    """2: what the compiler reads for each layer source."""
    batches = {}
    for layer, entry in m.layer_commands():
        src = entry['file']
        home = m.owner(src)
        if home in m.layers and home != layer:
            errors.append(f'{src} is in a folder of layer {home} but compiled into '
                          f'cachemgr_{layer}')
        key = (layer, entry['directory'], tuple(strip_command(entry)))
        batches.setdefault(key, []).append(os.path.join(entry['directory'], src))
    work = list(batches.items())
    with tempfile.TemporaryDirectory(prefix='layers_sources.') as scratch:
        dirs = [os.path.join(scratch, str(i)) for i in range(len(work))]
        for d in dirs:
            os.mkdir(d)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(lambda w: depends(w[0][1], w[0][2], w[0][3], w[1]),
                                    [(key + (srcs,), d) for (key, srcs), d in zip(work, dirs)]))
    count = 0
    for ((layer, _, _), srcs), (reads, err) in zip(work, results):
        if reads is None:
            errors.append(f'the sources of layer {layer} do not preprocess:\n{err}')
            continue
        for src in srcs:
            count += 1
            if os.path.realpath(src) not in reads:
                errors.append(f'{src}: the compiler did not open it')
                continue
            for dep in reads[os.path.realpath(src)]:
                owner = m.owner(dep)
                if owner is None or owner == 'generated' or owner in m.allowed(layer):
                    continue
                what = f'layer {owner}' if owner in m.layers else 'no layer'
                errors.append(f'{src} (layer {layer}) reads {dep} '
                              f'(really {os.path.realpath(dep)}, {what})')
    return count


def check_text(m, errors):
    """3: each include line of each file in the layer folders."""
    roots = [layer['root'] for layer in m.layers.values()] + [m.generated_include]
    names = {'cachemgr'} | {f for layer in m.layers.values() for f in layer['folders']}
    count = 0
    for name in m.layers:
        directory, flags = m.flags(name)
        path = include_dirs(flags, directory)
        allowed = m.allowed(name)
        for f in m.files(name):
            count += 1
            with open(f, errors='replace') as fh:
                lines = fh.read().splitlines()
            for no, line in enumerate(lines, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                kind, inc = match.groups()
                where = f'{f}:{no}: #include {kind}{inc}{">" if kind == "<" else kind}'
                if inc.startswith('/') or '..' in inc.split('/'):
                    errors.append(f'{where}: an include names its header by folder '
                                  f'("util/hash.h"), never with ".." or an absolute path')
                    continue
                if kind == '<':
                    if inc.split('/')[0] in names or \
                            any(os.path.exists(os.path.join(r, inc)) for r in roots):
                        errors.append(f'{where}: a project header is included with <...>: '
                                      f'use quotes, so the layer rules apply')
                    continue
                found = next((os.path.join(d, inc) for d in [os.path.dirname(f)] + path
                              if os.path.isfile(os.path.join(d, inc))), None)
                if found is None:
                    errors.append(f'{where}: not found in its own directory or on the '
                                  f'include path of layer {name}')
                    continue
                owner = m.owner(found)
                if owner == 'generated' or owner in allowed:
                    continue
                what = f'layer {owner}' if owner in m.layers else 'not a layer header'
                errors.append(f'{where}: is {os.path.realpath(found)} ({what}), '
                              f'which layer {name} may not include')
    return count


def main():
    start = time.monotonic()
    m, jobs = from_argv(sys.argv, __doc__)
    errors = []
    check_include_paths(m, errors)
    files = check_text(m, errors)
    compiled = check_compiler_deps(m, jobs, errors)
    for e in errors:
        print(f'FAIL {e}')
    print(f'{files} files read, {compiled} sources run through the preprocessor, '
          f'{len(errors)} problems, {time.monotonic() - start:.1f} s')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
