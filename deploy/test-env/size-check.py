#!/usr/bin/env python3
"""Fails when a Rust source file outside tests is over 600 lines or a function is over 100.

Usage: python3 deploy/test-env/size-check.py [--max-file 600] [--max-fn 100] [ROOT]

What counts: every `*.rs` under the workspace's crates, except integration tests
(`tests/` directories), unit-test files (`*_tests.rs`, `tests.rs`), fuzz/ and bench/.
A function is measured from the line of its `fn` keyword to the line of its closing
brace, found by counting braces outside strings, chars and comments (good enough for
this code base: it is checked against rustfmt'ed sources). Functions inside
`#[cfg(test)]` modules are skipped.
"""
import argparse
import os
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")
# Skipped anywhere: integration tests. Skipped at the top only: build output, fuzz, benches.
SKIP_ANYWHERE = {"tests", ".git"}
SKIP_TOP = {"target", "fuzz", "bench"}


def strip(line, state):
    """The line without string/char literals and comments; state carries block comments."""
    out, i, n = [], 0, len(line)
    while i < n:
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"] = False
            i = j + 2
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        if c == '"' or (c == "r" and re.match(r'r#*"', line[i:])):
            m = re.match(r'r(#*)"', line[i:])
            if m:
                end = '"' + m.group(1)
                j = line.find(end, i + len(m.group(0)))
                i = n if j < 0 else j + len(end)
                continue
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|[^\\'])'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def check(path, max_fn):
    lines = open(path, encoding="utf-8").read().split("\n")
    state = {"block": False}
    depth, stack, long_fns = 0, [], []
    test_depth = None
    pending_cfg_test = False
    for no, raw in enumerate(lines, 1):
        code = strip(raw, state)
        if "#[cfg(test)]" in raw:
            pending_cfg_test = True
        m = FN.match(raw)
        if m and test_depth is None and not pending_cfg_test:
            stack.append((m.group(7), no, depth))
        if pending_cfg_test and "{" in code:
            test_depth = depth
            pending_cfg_test = False
        elif pending_cfg_test and code.strip().endswith(";"):
            pending_cfg_test = False
        for ch in code:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if stack and depth == stack[-1][2]:
                    name, start, _ = stack.pop()
                    if no - start + 1 > max_fn:
                        long_fns.append((name, start, no - start + 1))
                if test_depth is not None and depth == test_depth:
                    test_depth = None
        # a declaration without a body (trait method)
        if stack and stack[-1][1] == no and code.rstrip().endswith(";") and "{" not in code:
            stack.pop()
    return len(lines) - (1 if lines and lines[-1] == "" else 0), long_fns


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-file", type=int, default=600)
    ap.add_argument("--max-fn", type=int, default=100)
    ap.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    a = ap.parse_args()
    bad = 0
    for d, dirs, files in os.walk(a.root):
        top = os.path.abspath(d) == os.path.abspath(a.root)
        dirs[:] = sorted(x for x in dirs if x not in SKIP_ANYWHERE and not (top and x in SKIP_TOP))
        for f in sorted(files):
            if not f.endswith(".rs") or f.endswith("_tests.rs") or f == "tests.rs":
                continue
            p = os.path.join(d, f)
            n, fns = check(p, a.max_fn)
            rel = os.path.relpath(p, a.root)
            if n > a.max_file:
                print(f"{rel}: {n} lines (at most {a.max_file})")
                bad += 1
            for name, start, length in fns:
                print(f"{rel}:{start}: fn {name} is {length} lines (at most {a.max_fn})")
                bad += 1
    if bad:
        print(f"size-check: {bad} over the limits", file=sys.stderr)
        return 1
    print("size-check: every file and function within the limits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
