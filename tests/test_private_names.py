"""No module of the package reaches into another module's private names: a name with a leading underscore is its
own module's, and a private module is its sub-package's.

The rule, precisely (every import counts, function-level ones included, and attribute access on an imported module):

1. A name that starts with ``_`` (a function, class or constant; dunders aside) is used only in the module that
   defines it: ``from video_cnn_rnn.x import _name`` and ``x._name`` on an imported package module are violations.
2. A private module, one whose name starts with ``_`` (``data/decode/_clips.py``), or anything below a private
   package, is imported only from inside the package that holds it (``data/decode/*``, its ``__init__`` included),
   and there only its public names. Everything else imports the package's public face (``video_cnn_rnn.data.decode``).

Tests and benchmarks may look inside (a test of ``_readers`` imports it); the package itself may not.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "video_cnn_rnn"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_module_problem(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import the module ``imported`` (rule 2), or None where it may."""
    parts = imported.split(".")
    for depth, part in enumerate(parts):
        if is_private(part):
            holder = ".".join(parts[:depth])  # the package that holds the private module
            if importer != holder and not importer.startswith(holder + "."):
                return f"{importer} imports {imported}, private to {holder} (import {holder}'s public names)"
            return None
    return None


def violations(module: str, path: Path) -> list[str]:
    found: list[str] = []
    module_aliases: set[str] = set()  # local names bound to package modules
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("video_cnn_rnn"):
                    found += filter(None, [private_module_problem(module, alias.name)])
                    if alias.asname:
                        module_aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("video_cnn_rnn"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:  # a module: rule 2
                    found += filter(None, [private_module_problem(module, full)])
                    module_aliases.add(alias.asname or alias.name)
                else:  # a name: rule 1, and rule 2 for the module it comes from
                    if is_private(alias.name):
                        found.append(f"{module} imports {alias.name} from {node.module}")
                    found += filter(None, [private_module_problem(module, node.module)])
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and is_private(node.attr)
        ):
            found.append(f"{module} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = [problem for module, path in MODULES.items() for problem in violations(module, path)]
    assert not found, "private names used across modules:\n" + "\n".join(sorted(set(found)))


def test_the_rule_catches_what_it_says(tmp_path: Path) -> None:
    """The checker itself, on made-up modules: each rule caught, the allowed forms let through."""
    source = tmp_path / "example.py"
    source.write_text(
        "from video_cnn_rnn.data.resumable import _set_rng_states\n"
        "from video_cnn_rnn.data.decode._clips import load_clip\n"
        "from video_cnn_rnn.data.decode import load_clips\n"
        "from video_cnn_rnn.data import resumable\n"
        "resumable._collect_rng_states()\n"
    )
    outside = violations("video_cnn_rnn.models.example", source)
    assert len(outside) == 3, outside  # rule 1 twice (import and attribute), rule 2 once
    inside = violations("video_cnn_rnn.data.decode._windows", source)
    assert len(inside) == 2, inside  # the private module is its own package's: allowed there
    assert private_module_problem("video_cnn_rnn.data.decode", "video_cnn_rnn.data.decode._clips") is None
