"""Architecture: the import contracts in pyproject.toml ``[tool.importlinter]`` hold.

``lint-imports`` (import-linter) checks the layers, the pure modules (no Ray, no MLflow),
the Ray/MLflow glue modules and package-level acyclicity. Imports inside functions count;
``if TYPE_CHECKING:`` imports do not.

import-linter's ``acyclic_siblings`` contract compares the children of each package, so it
misses a cycle that runs through a package's own ``__init__`` (``mlops_ray.data`` ->
``mlops_ray.data.hashing`` -> ``mlops_ray.data``); the second test checks cycles between
individual modules with grimp (which import-linter is built on).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")


def test_import_contracts_hold():
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} not found: install the test extra (pip install -e '.[test]')"
    # --no-cache: don't write .import_linter_cache/ into the checkout (the graph builds in ~1-2 s anyway).
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"lint-imports exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """One cycle (as a module path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}

    def strongconnect(root: str) -> None:  # iterative Tarjan
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.add(m)
                        if m == node:
                            break
                    if len(comp) > 1 or node in edges[node]:
                        components.append(comp)

    for m in sorted(modules):
        if m not in index:
            strongconnect(m)
    cycles = []
    for comp in components:
        start = min(comp)
        if start in edges[start]:
            cycles.append([start, start])
            continue
        # Shortest way back to `start` from a module it imports (any such path stays inside the component).
        back = min(
            (graph.find_shortest_chain(importer=nxt, imported=start) for nxt in edges[start] if nxt in comp), key=len
        )
        cycles.append([start, *back])
    return cycles


def test_no_import_cycles_between_modules():
    import grimp  # comes with import-linter (test extra)

    graph = grimp.build_graph("mlops_ray", exclude_type_checking_imports=True, cache_dir=None)
    modules = {m for m in graph.modules if m == "mlops_ray" or m.startswith("mlops_ray.")}
    cycles = _cycles(graph, modules)
    assert not cycles, "import cycles in mlops_ray:\n" + "\n".join(" -> ".join(c) for c in cycles)
