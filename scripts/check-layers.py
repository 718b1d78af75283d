#!/usr/bin/env python3
"""The house rules of the Rust code (docs/architecture.md), checked from the source text:

1. no import circle between the modules of any crate: at every level of a module tree, the
   modules that share a parent (a crate's top modules, a folder's files) reach each other
   only one way;
2. in `shared`, the layers only look down: foundation (config, aws, deadline, logging) <
   model < store < guards < path < edge, each importing only its own layer and those below;
3. no source file over 500 lines (tests after `#[cfg(test)]` aside);
4. no function over 80 lines unless the comment above it says why, in a line beginning
   "Over 80 lines:" (tests aside).

A module `a` depends on its sibling `b` when it names `crate::…::b` (through their common
parent) or `super::b`, in a `use` or inline. Prints every breach and exits 1 if there is one.
usage: scripts/check-layers.py [CHECKOUT]
"""
import os
import re
import sys

CRATES = ["shared/src", "functions/limit-scaler/src", "functions/dlq-redriver/src",
          "functions/health-prober/src", "functions/alarm-responder/src", "tests/src"]
LAYERS = {"config": 0, "aws": 0, "deadline": 0, "logging": 0,
          "model": 1, "store": 2, "guards": 3, "path": 4, "edge": 5}
MAX_FILE_LINES = 500
MAX_FN_LINES = 80


def modules(src):
    """Every module of a crate: its path (a tuple of names, () for the crate root) -> file."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[0] == "bin":
                continue
            if parts == ["main"] and os.path.exists(os.path.join(src, "lib.rs")):
                # A binary beside its library is a crate of its own, using the library by name.
                found[("<main>",)] = path
                continue
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def bins(src):
    """The files of a crate's `src/bin`, which `modules` leaves out of the import graph."""
    folder = os.path.join(src, "bin")
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".rs")) if os.path.isdir(folder) else []


def code(path):
    """The file's text before its test module."""
    text = open(path, encoding="utf-8").read()
    cut = re.search(r"^#\[cfg\(test\)\]", text, re.M)
    return text[: cut.start()] if cut else text


def blanked(text):
    """`text` with comments and string and char literals blanked (newlines kept), so that
    braces count only as code."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
        elif text.startswith("/*", i):
            # Block comments nest in Rust.
            depth, end = 1, i + 2
            while end < n and depth:
                if text.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif text.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
        elif (raw := re.match(r'b?r(#*)"', text[i:i + 8])) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + raw.group(1)
            end = text.find(close, i + len(raw.group(0)))
            end = n if end < 0 else end + len(close)
        elif text[i] == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            end += 1
        elif char := re.match(r"'(?:\\u\{[0-9a-fA-F]+\}|\\x..|\\.|[^\\'])'", text[i:i + 12]):
            end = i + len(char.group(0))
        else:
            out.append(text[i])
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", text[i:end]))
        i = end
    return "".join(out)


def long_functions(text):
    """(name, first line, length) of every function body over MAX_FN_LINES lines whose
    comments and attributes above do not say why it is longer."""
    code_only = blanked(text)
    lines = text.split("\n")
    found = []
    head = (r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
            r"(?:extern\s+)?fn\s+(\w+)")
    for match in re.finditer(head, code_only, re.M):
        # The body's `{`, or the `;` of a declaration, outside the signature's brackets
        # (`[u8; 4]`).
        at, nesting = match.end(), 0
        while at < len(code_only) and (nesting or code_only[at] not in "{;"):
            nesting += {"(": 1, "[": 1, ")": -1, "]": -1}.get(code_only[at], 0)
            at += 1
        if at >= len(code_only) or code_only[at] == ";":
            continue
        depth, end = 0, at
        for end in range(at, len(code_only)):
            depth += {"{": 1, "}": -1}.get(code_only[end], 0)
            if depth == 0:
                break
        first = code_only.count("\n", 0, match.start())
        length = code_only.count("\n", 0, end) - first + 1
        if length <= MAX_FN_LINES:
            continue
        above, line = [], first - 1
        while line >= 0 and lines[line].strip().startswith(("//", "#[")):
            above.append(lines[line])
            line -= 1
        if not any(comment.strip().lstrip("/").strip().startswith("Over 80 lines:") for comment in above):
            found.append((match.group(1), first + 1, length))
    return found


def references(module, text, known):
    """The modules `module`'s code names, resolved to the deepest known module."""
    found = set()
    paths = []
    for match in re.finditer(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
        paths.append((match.group(1), match.group(2).split("::")[1:]))
    for match in re.finditer(r"\b(crate|super|self)::((?:[A-Za-z_][A-Za-z0-9_]*::)*)\{([^}]*)\}", text, re.S):
        prefix = [p for p in match.group(2).split("::") if p]
        for item in re.findall(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_:]*)", match.group(3)):
            paths.append((match.group(1), prefix + item.split("::")))
    for anchor, names in paths:
        if anchor == "crate":
            base = ()
        elif anchor == "self":
            base = module
        else:
            base = module[:-1]
        while names and names[0] == "super":
            base, names = base[:-1], names[1:]
        target = base
        for name in names:
            if target + (name,) in known:
                target = target + (name,)
            else:
                break
        if target != module and target + () in known:
            found.add(target)
    return found


def circles(graph):
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    breaches = []
    for crate in CRATES:
        src = os.path.join(top, crate)
        if not os.path.isdir(src):
            continue
        known = modules(src)
        edges = {m: references(m, code(f), known) for m, f in known.items()}
        # Siblings: at every parent, a child depends on a sibling when it (or anything inside
        # it) names that sibling (or anything inside it).
        parents = {m[:-1] for m in known if m}
        for parent in sorted(parents):
            children = sorted({m[: len(parent) + 1] for m in known if len(m) > len(parent) and m[: len(parent)] == parent})
            graph = {child: set() for child in children}
            for module, targets in edges.items():
                if module[: len(parent)] != parent or len(module) <= len(parent):
                    continue
                mine = module[: len(parent) + 1]
                for target in targets:
                    if target[: len(parent)] == parent and len(target) > len(parent):
                        theirs = target[: len(parent) + 1]
                        if theirs != mine:
                            graph[mine].add(theirs)
            for circle in circles(graph):
                names = ", ".join("::".join(m) for m in circle)
                uses = "; ".join(f"{'::'.join(a)} -> {'::'.join(b)}" for a in circle
                                 for b in sorted(graph[a]) if b in circle)
                breaches.append(f"{crate}: import circle between {names} ({uses})")
            if crate == "shared/src" and parent == ():
                for mine, theirs in graph.items():
                    for other in theirs:
                        if LAYERS.get(other[0], 99) > LAYERS.get(mine[0], 99):
                            breaches.append(f"{crate}: {mine[0]} imports {other[0]}, a layer above it")
        for path in sorted(known.values()) + bins(src):
            length = code(path).count("\n")
            if length > MAX_FILE_LINES:
                breaches.append(f"{os.path.relpath(path, top)}: {length} lines (at most {MAX_FILE_LINES} before its tests)")
            for name, line, length in long_functions(code(path)):
                breaches.append(f"{os.path.relpath(path, top)}:{line}: fn {name} is {length} lines: split it, or say why in a comment line above it beginning 'Over 80 lines:'")
    for breach in breaches:
        print(breach)
    if breaches:
        sys.exit(1)
    print("layers: no import circle, no layer looks up, no file over 500 lines, no unexplained function over 80")


if __name__ == "__main__":
    main()
