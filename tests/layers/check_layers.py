#!/usr/bin/env python3
"""The layer rule, checked from the code itself: every #include in src/ and
tools/ points down a layer (or stays in its own folder), never up or sideways,
and no header includes itself round a circle.

    tools -> src/model -> src/dist, src/kv -> src/ops -> src/cpu, src/cuda
          -> src/backend -> src/formats -> src/base

The public headers in include/ may be included from anywhere and include
only each other. The case harness (tests/harness, the ops' case files in
tests/<op>/, tests/ref, tests/test_util) is shared by the tests and the
CLI's bench, so it uses the public headers only. tools/ sees nothing but
the public headers, the harness and its own files.
Usage: check_layers.py ROOT   (exit status 0 when the rule holds)
"""
import os
import re
import sys
import tempfile

# Folder -> rank. A file may include files of lower rank, or of its own
# folder group (same key). Two folders of one rank (cpu and cuda) are
# siblings: neither sees the other.
LAYERS = {
    "src/base": 1,
    "src/formats": 2,
    "src/backend": 3,
    "src/cpu": 4,
    "src/cuda": 4,
    "src/ops": 5,
    "src/kv": 6,
    "src/dist": 6,
    "src/model": 7,
    "tools": 8,
}
PUBLIC = "include"
HARNESS = "harness"
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def group_of(rel):
    for folder in sorted(LAYERS, key=len, reverse=True):
        if rel == folder or rel.startswith(folder + "/"):
            return folder
    if rel.startswith(PUBLIC + "/"):
        return PUBLIC
    if is_harness(rel):
        return HARNESS
    return None


def is_harness(rel):
    """tests/ files other than the test programs themselves and the layer checks."""
    parts = rel.split("/")
    return (parts[0] == "tests" and parts[1] != "layers" and not parts[-1].startswith("test_")
            or rel in ("tests/test_util.c", "tests/test_util.h"))


def search_path(root):
    """Where an #include "name" is looked for after the including file's own
    folder: the build's include directories."""
    tests = [os.path.join("tests", d) for d in sorted(os.listdir(os.path.join(root, "tests")))
             if os.path.isdir(os.path.join(root, "tests", d))] if os.path.isdir(os.path.join(root, "tests")) else []
    return ["src", PUBLIC, "tests"] + tests


def resolve(root, including, name):
    """The file an #include "name" in `including` (relative path) means:
    beside the including file first, then along the search path."""
    for base in [os.path.dirname(including)] + search_path(root):
        rel = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(os.path.join(root, rel)):
            return rel
    return None


def sources(root):
    for top in ("src", "tools", PUBLIC, "tests"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                if f.endswith((".c", ".h", ".cu", ".cuh")) and (top != "tests" or is_harness(rel)):
                    yield rel


def check(root):
    problems, graph = [], {}
    for rel in sorted(sources(root)):
        group = group_of(rel)
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        graph[rel] = []
        for name in INCLUDE_RE.findall(text):
            target = resolve(root, rel, name)
            if target is None:
                problems.append(f'{rel}: #include "{name}" names no file in the tree')
                continue
            graph[rel].append(target)
            tgroup = group_of(target)
            if tgroup == PUBLIC:
                continue
            if group == PUBLIC:
                problems.append(f"{rel}: a public header includes the internal {target}")
            elif group == HARNESS:
                if tgroup != HARNESS:
                    problems.append(f"{rel} -> {target}: the case harness uses the public headers only")
            elif group is None or tgroup is None:
                problems.append(f"{rel} -> {target}: a folder with no layer (add it to LAYERS)")
            elif group == "tools":
                if tgroup not in ("tools", HARNESS):
                    problems.append(f"{rel} -> {target}: the CLI uses the public headers and the case harness only")
            elif tgroup != group and LAYERS[tgroup] >= LAYERS[group]:
                way = "sideways" if LAYERS[tgroup] == LAYERS[group] else "up"
                problems.append(f"{rel} ({group}) -> {target} ({tgroup}): an arrow {way}")
    problems += circles(graph)
    return problems


def circles(graph):
    """Include cycles among files, by depth-first search."""
    found, state = [], {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                found.append("include circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


def self_test():
    """The check must catch an upward arrow, a sideways one, a circle and a
    CLI reaching past the public headers; a clean tree must pass."""
    files = {
        "include/pub.h": "",
        "src/base/b.h": '#include "pub.h"\n',
        "src/cpu/k.c": '#include "base/b.h"\n#include "backend/t.h"\n',
        "src/backend/t.h": '#include "base/b.h"\n',
        "src/ops/o.c": '#include "cpu/k.c"\n',
        "tools/m.c": '#include "pub.h"\n#include "h.h"\n',
        "tests/harness/h.h": '#include "pub.h"\n',
    }
    bad = {
        "src/base/up.c": '#include "ops/o.c"\n',
        "src/cuda/side.c": '#include "cpu/k.c"\n',
        "src/formats/a.h": '#include "b2.h"\n',
        "src/formats/b2.h": '#include "a.h"\n',
        "tools/peek.c": '#include "base/b.h"\n',
        "tests/harness/deep.c": '#include "cpu/k.c"\n',
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in files.items():
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "w") as fh:
                fh.write(text)
        if check(tmp):
            return ["self-test: a clean tree was rejected: " + "; ".join(check(tmp))]
        for rel, text in bad.items():
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "w") as fh:
                fh.write(text)
        got = check(tmp)
        want = ["src/base/up.c", "src/cuda/side.c", "include circle", "tools/peek.c", "tests/harness/deep.c"]
        return [f"self-test: no complaint about {w}" for w in want if not any(w in p for p in got)]


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    problems = self_test() + check(root)
    for p in problems:
        print(p)
    checked = sum(1 for _ in sources(root))
    print(f"{checked} files checked: {len(problems)} problem(s)")
    print(f"{0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
