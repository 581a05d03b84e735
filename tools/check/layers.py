#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The driver's two layers, checked on its sources.

    layers.py DRIVER_DIR

Prints what it found and exits 1 on any breach of these rules:
  * every `unsafe` (the keyword) is under kernel_ext/ (the abstraction
    layer); every driver module says #![forbid(unsafe_code)] (the crate root,
    whose module! expansion needs it, says #![deny(unsafe_code)]);
  * the driver names no C bindings (`bindings`): the constants and types
    it needs come from kernel_ext's typed modules;
  * kernel_ext/ refers to nothing of the driver (`crate::` paths other than
    `crate::kernel_ext`);
  * the driver modules' references to each other (`use crate::...` trees
    and `crate::x::` paths) form no cycle.
"""
import os
import re
import sys

ROOT_FILE = "virtio_media_main.rs"


def rust_files(top):
    for base, _dirs, files in os.walk(top):
        for name in sorted(files):
            if name.endswith(".rs") and not name.endswith("_generated.rs"):
                yield os.path.relpath(os.path.join(base, name), top)


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def use_tree_roots(tree):
    """Top-level names of a `use crate::TREE;` tree."""
    tree = tree.strip()
    if not tree.startswith("{"):
        return [re.split(r"[:\s{;]", tree, 1)[0]]
    depth, start, roots = 0, 1, []
    for i, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if (ch == "," and depth == 1) or (depth == 0 and ch == "}"):
            part = tree[start:i].strip()
            if part:
                roots.append(re.split(r"[:\s{]", part, 1)[0])
            start = i + 1
    return roots


def crate_references(text):
    refs = set()
    for match in re.finditer(r"\buse\s+crate::", text):
        end = text.index(";", match.end())
        refs.update(use_tree_roots(text[match.end():end]))
    refs.update(re.findall(r"(?<![\w:])crate::(\w+)", text))
    return {r for r in refs if r and r != "self"}


def module_of(path):
    top = path.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def find_cycle(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
            if not state.get(nxt):
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if not state.get(node):
            found = visit(node, [node])
            if found:
                return found
    return None


def main():
    top = sys.argv[1]
    problems, edges = [], set()
    driver_modules = set()
    for path in rust_files(top):
        raw = open(os.path.join(top, path)).read()
        text = strip_comments_and_strings(raw)
        in_layer = path.split(os.sep)[0] in ("kernel_ext", "kernel_ext.rs")
        refs = crate_references(text)
        if in_layer:
            for ref in sorted(refs - {"kernel_ext"}):
                problems.append(f"{path}: the abstraction layer uses crate::{ref}")
            continue
        for line_no, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bunsafe\b", line):
                problems.append(f"{path}:{line_no}: unsafe in the driver layer: {line.strip()}")
            if re.search(r"\bbindings\b", line):
                problems.append(f"{path}:{line_no}: C bindings in the driver layer: {line.strip()}")
        wanted = "#![deny(unsafe_code)]" if path == ROOT_FILE else "#![forbid(unsafe_code)]"
        if wanted not in raw:
            problems.append(f"{path}: does not say {wanted}")
        if path == ROOT_FILE:
            continue
        module = module_of(path)
        driver_modules.add(module)
        for ref in refs:
            if ref != module and ref != "kernel_ext":
                edges.add((module, ref))
    # Items of the crate root (module parameters, `module()`) are not
    # modules.
    edges = {(a, b) for a, b in edges if b in driver_modules}
    cycle = find_cycle(edges)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    print(f"{len(driver_modules)} driver modules, {len(edges)} dependencies between them")
    for a, b in sorted(edges):
        print(f"  {a} -> {b}")
    for problem in problems:
        print("PROBLEM:", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
