"""Count the static import graph of ``src/camlens`` against the layers of pyproject.toml.

    python tools/import_graph.py            # modules, arrows, upward arrows, circles

Every ``import`` statement counts, also inside functions (a deferred import is still an arrow).
An arrow is *upward* when it goes from a layer to a higher one in the ``layers`` contract of
``[tool.importlinter]``; a *circle* is a strongly connected set of two or more modules. Exit
status 1 when there is an upward arrow or a circle. Uses grimp, which import-linter installs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def layer_ranks() -> dict[str, int]:
    """``camlens.<name>`` -> rank (0 is the top) from the layers contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    ranks = {}
    for rank, layer in enumerate(contract["layers"]):
        for name in layer.split("|"):
            ranks[f"camlens.{name.strip()}"] = rank
    return ranks


def rank_of(module: str, ranks: dict[str, int]) -> int | None:
    for prefix, rank in ranks.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def circles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    graph = grimp.build_graph("camlens")
    modules = {module for module in graph.modules if module.startswith("camlens")}
    ranks = layer_ranks()
    arrows, upward = 0, []
    for module in sorted(modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            arrows += 1
            low, high = rank_of(module, ranks), rank_of(imported, ranks)
            if low is not None and high is not None and high < low:
                upward.append(f"{module} -> {imported}")
    found = circles(graph, modules)
    print(f"modules: {len(modules)}")
    print(f"import arrows: {arrows}")
    print(f"upward arrows (against the layers of pyproject.toml): {len(upward)}")
    for arrow in upward:
        print(f"  {arrow}")
    print(f"circles: {len(found)}")
    for component in found:
        print(f"  {' <-> '.join(component)}")
    return 1 if upward or found else 0


if __name__ == "__main__":
    raise SystemExit(main())
