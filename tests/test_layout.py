"""The package's shape: no import cycle among its modules, library code never parses argv."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_meta_attention"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports (anywhere in it, functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, name, set(files)) for name, path in files.items()}
    packages = {name for name, path in files.items() if path.name == "__init__.py"}
    # A package's __init__ only re-exports: an edge into it is not a dependency on its siblings.
    graph = {name: deps - packages for name, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, name, dep])
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_library_code_never_parses_argv():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "argparse" not in text and "sys.argv" not in text, path


# Dependencies point down: a folder never imports those above it (the model does not depend on
# its own analysis, the network not on the Bayesian layer, the data on nothing of the model).
ABOVE = {
    "mechanisms": {"bayes", "analysis", "training", "decoding", "data"},
    "data": {"mechanisms", "bayes", "analysis", "training", "decoding"},
    "bayes": {"analysis", "training", "decoding"},
    "simplex": {"mechanisms", "bayes", "analysis", "training", "decoding", "data"},
    "policies": {"analysis", "training", "decoding"},
}


def test_dependencies_point_down():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, path in files.items():
        part = name.split(".")[1] if "." in name else ""
        for dep in imports(path, name, set(files)):
            top = dep.split(".")[1] if "." in dep else ""
            assert top not in ABOVE.get(part, set()), f"{name} imports {dep}"
