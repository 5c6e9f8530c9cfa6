"""Import rules, read from the source: tests share code only through tests/helpers/, the
package's modules form no import cycle, and no module imports a room above its own (the layers
CONTRIBUTING.md draws)."""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
SRC = REPO / "src"
PACKAGE = "vilt_lab"


def imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside a function, class or `if`."""
    return (node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom))


def test_no_test_file_imports_another_test_module_or_conftest() -> None:
    """pytest puts tests/ on sys.path, so a test module or conftest imports as a top-level name;
    importing one runs its module code again and ties two test files together."""
    at_root = {path.stem for path in TESTS.glob("*.py")}  # the test modules and conftest
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module or ""] if node.level == 0 else []
            found += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {name}"
                for name in names
                if name.partition(".")[0] in at_root
            ]
    assert not found, "shared test code belongs in tests/helpers/:\n" + "\n".join(found)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}, relative imports resolved, function-level and
    TYPE_CHECKING imports included.

    An import is an edge to the module it names: ``from pkg import name`` to ``pkg.name`` where that
    is a module, else to ``pkg`` (its ``__init__``). The parent packages every import initialises
    are not edges, or each package whose ``__init__`` re-exports its submodules would be a cycle.
    """
    paths = {module_name(path): path for path in (SRC / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names}
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module: each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth first, inside it)."""
    start = min(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node] & component):
            if target == start:
                cycle = [node]
                while cycle[-1] != start:
                    cycle.append(came_from[cycle[-1]])
                return [*reversed(cycle), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"{sorted(component)} is strongly connected, so it holds a cycle")


def test_the_package_modules_form_no_import_cycle() -> None:
    graph = import_graph()
    cycles = [" -> ".join(shortest_cycle(graph, c)) for c in strongly_connected(graph)]
    assert not cycles, "import cycles (one per tangle):\n" + "\n".join(cycles)


# The rooms from the bottom up (CONTRIBUTING.md, "Rooms"): a module may import its own room and
# the rooms below it, never one above. The longest matching prefix names a module's room.
LAYERS = [
    ["vilt_lab.utils"],
    ["vilt_lab.model", "vilt_lab.data"],
    ["vilt_lab.weights", "vilt_lab.measure"],
    ["vilt_lab.objectives"],
    ["vilt_lab.evaluation", "vilt_lab.config"],
    ["vilt_lab.training"],
    ["vilt_lab.tasks"],
    ["vilt_lab.build"],
    ["vilt_lab.config.validation"],
    [
        "vilt_lab.train",
        "vilt_lab.eval",
        "vilt_lab.convert_cli",
        "vilt_lab.summary_table",
        "vilt_lab.predict",
        "vilt_lab.report",
        "vilt_lab.bench",
        "vilt_lab.api",
    ],
]
# The package itself (its __init__ names no room) and the rooms' own __init__ files sit anywhere.
LEVEL = {prefix: level for level, prefixes in enumerate(LAYERS) for prefix in prefixes}


def level_of(module: str) -> int | None:
    matches = [p for p in LEVEL if module == p or module.startswith(p + ".")]
    return LEVEL[max(matches, key=len)] if matches else None


def test_every_module_has_a_room() -> None:
    homeless = [m for m in import_graph() if m != PACKAGE and level_of(m) is None]
    assert not homeless, f"add these modules' rooms to LAYERS and CONTRIBUTING.md: {homeless}"


def test_no_module_imports_a_room_above_its_own() -> None:
    upward = [
        f"{module} (room {level_of(module)}) imports {target} (room {level_of(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if module != PACKAGE and level_of(target) is not None and level_of(target) > level_of(module)
    ]
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_the_benchmarks_call_no_private_method() -> None:
    """bench/ times what a run runs through public entry points (`Trainer.train_step`, the
    builders): a private call would tie a benchmark to internals a refactor may change."""
    found = []
    for path in sorted((SRC / PACKAGE / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner, name = node.func.value, node.func.attr
            private = name.startswith("_") and not name.startswith("__")
            if private and not (isinstance(owner, ast.Name) and owner.id in ("self", "cls", "torch")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} calls {ast.unparse(node.func)}")
    assert not found, "\n".join(found)
