"""The layering as the build made it, for the tests in tests/layers.

Everything here comes from the build tree, never from a copy of the layering kept in the
tests: map.json is written by cmake/CachemgrLayers.cmake at configure time (folders,
public headers, declared LAYERS, actual links) and compile_commands.json holds the real
compile command of every layer source.
"""
import json
import os
import re
import shlex

SOURCE_SUFFIXES = ('.cpp', '.cc', '.h', '.hpp', '.cpp.in', '.h.in')


def from_argv(argv, usage):
    """The map and the parallelism a test was given: BUILD_DIR [JOBS] (default 2)."""
    if len(argv) < 2:
        raise SystemExit(usage)
    return LayerMap(argv[1]), int(argv[2]) if len(argv) > 2 else 2


def preprocess_args(flags):
    """The compile command `flags` turned into a preprocessor run: -E, and with GCC
    -fdirectives-only too (macros are not expanded, which is faster; clang has no such
    flag, and the sanitizer builds are clang's)."""
    fast = [] if 'clang' in os.path.basename(flags[0]) else ['-fdirectives-only']
    return list(flags) + ['-E'] + fast


class LayerMap:
    def __init__(self, build_dir):
        self.build_dir = os.path.realpath(build_dir)
        with open(os.path.join(build_dir, 'layers', 'map.json')) as f:
            data = json.load(f)
        self.source_dir = os.path.realpath(data['source_dir'])
        self.public_dir = os.path.realpath(data['public_dir'])
        self.generated_include = os.path.realpath(data['generated_include'])
        self.layers = data['layers']  # bottom to top, as CachemgrLayers.cmake makes them
        for layer in self.layers.values():
            layer['folders'] = {k: os.path.realpath(v) for k, v in layer['folders'].items()}
        with open(os.path.join(build_dir, 'compile_commands.json')) as f:
            self.commands = json.load(f)

    def allowed(self, name):
        """The layers whose headers a source of `name` may include: itself and, following
        the declared LAYERS lists, every layer below it (links are PUBLIC, so transitive)."""
        seen, todo = set(), [name]
        while todo:
            layer = todo.pop()
            if layer not in seen:
                seen.add(layer)
                todo.extend(self.layers[layer]['declared'])
        return seen

    def reachable(self, name):
        """The layers whose roots the build really puts on the include path of `name`'s
        sources: its LINK_LIBRARIES, then what those pass on (INTERFACE_LINK_LIBRARIES)."""
        seen, todo = {name}, list(self.layers[name]['links'])
        while todo:
            layer = todo.pop()
            if layer not in seen:
                seen.add(layer)
                todo.extend(self.layers[layer]['interface'])
        return seen

    def owner(self, path):
        """The layer a file belongs to (by its real path), 'generated' for the generated
        include dir, 'project' for any other file of the project, None for outside it."""
        real = os.path.realpath(path)
        for name, layer in self.layers.items():
            for folder in layer['folders'].values():
                if real.startswith(folder + os.sep):
                    return name
            if os.path.dirname(real) == self.public_dir and \
                    os.path.basename(real) in layer['public_headers']:
                return name
        if real.startswith(self.generated_include + os.sep):
            return 'generated'
        if real.startswith(self.source_dir + os.sep) or real.startswith(self.build_dir + os.sep):
            return 'project'
        return None

    def files(self, name):
        """Every source and header in the folders of a layer (what is on disk, not only
        what a CMakeLists.txt names), as real paths."""
        out = []
        for folder in self.layers[name]['folders'].values():
            for dirpath, _, names in os.walk(folder):
                for n in sorted(names):
                    if n.endswith(SOURCE_SUFFIXES):
                        out.append(os.path.join(dirpath, n))
        return sorted(out)

    def layer_commands(self):
        """(layer, entry) for every compile command of a layer library; the layer is the
        target the object file belongs to (CMakeFiles/cachemgr_<layer>.dir/...)."""
        out = []
        for entry in self.commands:
            args = command_args(entry)
            obj = args[args.index('-o') + 1] if '-o' in args else ''
            m = re.search(r'(?:^|/)CMakeFiles/cachemgr_([a-z_]+)\.dir/', obj)
            if m and m.group(1) in self.layers:
                out.append((m.group(1), entry))
        return out

    def flags(self, name):
        """The preprocessor and language flags of a layer's sources, from the first of its
        compile commands (they share them: include path and definitions are per target)."""
        for layer, entry in self.layer_commands():
            if layer == name:
                return entry['directory'], strip_command(entry)
        raise SystemExit(f'no compile command for a source of layer {name} in '
                         f'{self.build_dir}/compile_commands.json')


def command_args(entry):
    if 'arguments' in entry:
        return list(entry['arguments'])
    return shlex.split(entry['command'])


def strip_command(entry):
    """The compile command without its source, -c and -o, to reuse with other options."""
    args, out, skip = command_args(entry), [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ('-o', '-MF', '-MT', '-MQ'):
            skip = True
        elif arg in ('-c', '-MD', '-MMD') or arg == entry['file']:
            continue
        else:
            out.append(arg)
    return out


def include_dirs(args, directory):
    """The -I directories of a command, in order (what a quoted include searches after
    the including file's own directory)."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg in ('-I', '-iquote', '-isystem'):
            out.append(args[i + 1])
            i += 2
            continue
        for flag in ('-I', '-iquote', '-isystem'):
            if arg.startswith(flag) and len(arg) > len(flag):
                out.append(arg[len(flag):])
        i += 1
    return [os.path.join(directory, d) for d in out]
