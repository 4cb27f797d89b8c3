#!/usr/bin/python3
"""libcachemgr.so exports exactly the public API: the names marked CACHEMGR_EXPORT in the
public headers, and nothing else (no internal layer, no template instantiation).

Usage: exports_test.py LIBRARY PUBLIC_HEADER_DIR
"""
import pathlib
import re
import subprocess
import sys

# "typeinfo for cachemgr::Error", "cachemgr::Cache::Open(...)", "cachemgr::PlanName(...)"
SYMBOL = re.compile(r"^(?:typeinfo for |typeinfo name for |vtable for )?cachemgr::(\w+)")
MARKED_CLASS = re.compile(r"\bclass\s+CACHEMGR_EXPORT\s+(\w+)")
MARKED_FUNCTION = re.compile(r"\bCACHEMGR_EXPORT\s+[^;{(]*?\b(\w+)\s*\(")


def marked_names(header_dir):
    names = {}
    for header in sorted(pathlib.Path(header_dir).glob("*.h")):
        text = header.read_text()
        for pattern in (MARKED_CLASS, MARKED_FUNCTION):
            for match in pattern.finditer(text):
                names[match.group(1)] = header.name
    return names


def exported_symbols(library):
    out = subprocess.run(["nm", "-D", "--defined-only", "-C", library], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    symbols = []
    for line in out.splitlines():
        parts = line.split(None, 2)  # address, type, name
        if len(parts) == 3:
            symbols.append(parts[2])
    return symbols


def main():
    library, header_dir = sys.argv[1], sys.argv[2]
    marked = marked_names(header_dir)
    if not marked:
        sys.exit(f"no CACHEMGR_EXPORT marks found in {header_dir}/*.h: the regexps here "
                 "no longer match the headers' declarations")
    symbols = exported_symbols(library)
    problems = []
    seen = set()
    for symbol in symbols:
        match = SYMBOL.match(symbol)
        if not match:
            problems.append(f"exported, but not in namespace cachemgr: {symbol}")
        elif match.group(1) not in marked:
            problems.append(f"exported, but not marked CACHEMGR_EXPORT in a public header: "
                            f"{symbol}")
        else:
            seen.add(match.group(1))
    for name, header in sorted(marked.items()):
        if name not in seen:
            problems.append(f"marked CACHEMGR_EXPORT in {header} but not exported: {name}")
    for symbol in ("cachemgr::Cache::Open", "typeinfo for cachemgr::Error"):
        if not any(s.startswith(symbol) for s in symbols):
            problems.append(f"missing from the exports: {symbol}")
    print(f"{len(symbols)} symbols exported from {library}; {len(marked)} names marked")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print("(fix: mark public API with CACHEMGR_EXPORT in cachemgr/include/cachemgr; "
              "keep internals hidden; cmake/cachemgr.map keeps only namespace cachemgr)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
