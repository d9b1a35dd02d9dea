"""The package's layers: data <- models <- extraction / reports / crossval / export <- cli, with no import cycle, and
no module over 350 lines.

Every import of a package module counts, function-level ones included: a cycle hidden in a function is still a
cycle for the reader, and the next change can make it bite at import time.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "video_cnn_rnn"
# A module may import modules of its own layer or a lower one.
LAYERS = {
    "hardware": 0,
    "verbosity": 0,
    "data": 0,
    "models": 1,
    "extraction": 2,
    "reports": 2,
    "crossval": 2,
    "serve": 2,
    "export": 2,
    "timeline": 2,
    "proxying": 2,
    "errors": 2,
    "summary": 2,
    "cli": 3,
    "cli_help": 3,
    "launcher": 4,
    "__main__": 4,
}
# One concept per module: a module that grows past this splits by concept (STYLE.md).
MAX_MODULE_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def package_imports(path: Path) -> set[str]:
    """Package modules ``path`` imports anywhere in it (``from video_cnn_rnn.data import x`` counts
    ``video_cnn_rnn.data.x`` when that is a module, else ``video_cnn_rnn.data``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("video_cnn_rnn")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("video_cnn_rnn"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # the package's own __init__ is a facade


def test_every_module_imports_only_its_layer_or_below() -> None:
    wrong = []
    for module, path in MODULES.items():
        if layer(module) is None:
            continue
        for imported in package_imports(path):
            if layer(imported) is not None and layer(imported) > layer(module):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = {module: package_imports(path) & MODULES.keys() for module, path in MODULES.items()}
    # Importing a package's module runs its __init__ first, but that is not an edge a reader follows.
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(trail[trail.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported, [*trail, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_layer_table_knows_every_module() -> None:
    unknown = [module for module in MODULES if module != "video_cnn_rnn" and layer(module) is None]
    assert not unknown, f"add these modules to LAYERS: {unknown}"


def test_each_module_imports_alone() -> None:
    """Each module imported with no other package module loaded before it (third-party libraries stay loaded, so
    this takes seconds): an import that only works after another module was imported fails here."""
    script = f"""
import importlib, sys, traceback
for module in {sorted(name for name in MODULES if not name.endswith("__main__"))!r}:
    for loaded in [name for name in sys.modules if name.split(".")[0] == "video_cnn_rnn"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(module)
    except Exception:
        print("FAILED", module, traceback.format_exc(limit=3))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FAILED" not in result.stdout, result.stdout


def test_no_module_is_longer_than_350_lines() -> None:
    """One concept per module, small enough to hold in one's head: a module that grows past this splits by concept."""
    long = {
        module: n for module, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"
