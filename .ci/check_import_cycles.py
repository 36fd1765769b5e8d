"""Fail when modules of the package import each other in a cycle.

import-linter's layer contracts stop imports going *up* the layers; this check also stops
two modules of one layer (say ``io.images`` and ``io.zarr_io``) from importing each other,
directly or through others. Imports inside functions count too: a cycle hidden in a
function body is still a cycle of responsibilities. Run: ``python .ci/check_import_cycles.py``.
"""

from __future__ import annotations

import sys

import grimp

PACKAGE = "napari_cryoseg"


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over the package's module import graph; groups of size > 1."""
    modules = sorted(m for m in graph.modules if m.startswith(PACKAGE))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(10_000)

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.find_modules_directly_imported_by(module)):
            if not target.startswith(PACKAGE):
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


def is_package_init(graph: grimp.ImportGraph, module: str) -> bool:
    """True for a package's ``__init__`` (re-exporting its own modules is not a cycle)."""
    return any(m.startswith(module + ".") for m in graph.modules)


def main() -> int:
    graph = grimp.build_graph(PACKAGE)
    # A package __init__ that re-exports its submodules imports them, and they import
    # siblings through the package name: drop the package -> own submodule edges.
    for module in list(graph.modules):
        if module.startswith(PACKAGE) and is_package_init(graph, module):
            for target in list(graph.find_modules_directly_imported_by(module)):
                if target.startswith(module + "."):
                    graph.remove_import(importer=module, imported=target)
    cycles = strongly_connected(graph)
    for group in cycles:
        print("import cycle: " + " <-> ".join(group))
    if cycles:
        print(f"{len(cycles)} import cycle(s) inside {PACKAGE}; break them (move the shared "
              "code down a layer or into its own module)")
        return 1
    print(f"no import cycles inside {PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
