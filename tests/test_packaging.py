"""pyproject.toml declares what the package imports, optional features stay optional, and their absence is explained.

The full check of the built wheel in a fresh environment (console script, imports, fit -> predict) is
``.ci/wheel_check``, run by ``.ci/run``; these are the fast, static halves of it.
"""

import ast
import re
import sys
import warnings
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from video_cnn_rnn import reports

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "video_cnn_rnn"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEV_ONLY = {"dev", "docs"}  # extras for working on the package, not features of it


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str, tuple[Requirement, str | None]]:
    """Distribution name -> (requirement, the extra that holds it or None for a core dependency)."""
    found: dict[str, tuple[Requirement, str | None]] = {}
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        found[normalize(requirement.name)] = (requirement, None)
    for extra, lines in PYPROJECT["project"].get("optional-dependencies", {}).items():
        if extra in DEV_ONLY:
            continue
        for line in lines:
            requirement = Requirement(line)
            found.setdefault(normalize(requirement.name), (requirement, extra))
    return found


def third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """Top-level module -> [(file:line, imported at module level outside try)] for every non-stdlib import."""
    imports: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        guarded: set[int] = set()  # ids of import nodes inside a function body or a try block
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try)):
                guarded.update(id(inner) for inner in ast.walk(node) if inner is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == PACKAGE.name or top == "__future__":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                imports.setdefault(top, []).append((where, id(node) not in guarded))
    return imports


def distributions_of(module: str) -> list[str]:
    """The distributions that provide ``module``: from the installed metadata, else the module's own name
    (a module absent here, such as decord off Linux x86-64, is then looked up by that name)."""
    return [normalize(name) for name in packages_distributions().get(module, [module])]


def test_every_import_is_declared() -> None:
    declared = requirements()
    imports = third_party_imports()
    assert {"torch", "lightning", "av", "numpy", "PIL"} <= set(imports), sorted(imports)  # the scan sees them
    undeclared = {
        module: [where for where, _ in sites]
        for module, sites in imports.items()
        if not any(dist in declared for dist in distributions_of(module))
    }
    assert not undeclared, f"imported but not in pyproject.toml's dependencies or a feature extra: {undeclared}"


def test_optional_imports_are_deferred() -> None:
    """A module from an extra, or a dependency that a marker leaves out on some platforms, is imported inside a
    function or a try block only, so `import video_cnn_rnn` and the CLI work without it."""
    declared = requirements()
    eager = {}
    for module, sites in third_party_imports().items():
        optional = [dist for dist in distributions_of(module) if dist in declared]
        if any(declared[dist][1] is not None or declared[dist][0].marker is not None for dist in optional):
            top_level = [where for where, at_module_level in sites if at_module_level]
            if top_level:
                eager[module] = top_level
    assert not eager, f"optional modules imported at module level: {eager}"


def test_decord_only_where_it_has_wheels() -> None:
    """decord 0.6 has wheels for Linux x86-64 and Windows only; Intel macOS matched the old `x86_64` marker."""
    requirement, extra = requirements()["decord"]
    assert extra is None and requirement.marker is not None

    def wanted(sys_platform: str, machine: str) -> bool:
        return Marker(str(requirement.marker)).evaluate({"sys_platform": sys_platform, "platform_machine": machine})

    assert wanted("linux", "x86_64")
    assert not wanted("darwin", "x86_64")
    assert not wanted("darwin", "arm64")
    assert not wanted("linux", "aarch64")
    assert not wanted("win32", "AMD64")


def test_feature_extras_and_dev() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {normalize(Requirement(r).name) for r in extras["plots"]} == {"matplotlib"}
    assert {normalize(Requirement(r).name) for r in extras["tensorboard"]} == {"tensorboard"}
    core = {normalize(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert not {"matplotlib", "tensorboard"} & core, "matplotlib and tensorboard are extras, not hard dependencies"
    dev = {normalize(Requirement(r).name) for r in extras["dev"]}
    for extra, lines in extras.items():
        if extra not in DEV_ONLY:
            assert {normalize(Requirement(r).name) for r in lines} <= dev, f"dev should include the {extra} extra"


REPORT = {
    "metrics": {"test_acc": 0.5},
    "per_class": [{"class": "a", "precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}],
    "confusion_matrix": [[1, 1], [0, 2]],
    "class_names": ["a", "b"],
}


def test_test_report_without_matplotlib_warns_and_keeps_the_numbers(tmp_path: Path, monkeypatch) -> None:
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError, as without [plots]
    with pytest.warns(UserWarning, match=re.escape("pip install 'video_cnn_rnn[plots]'")):
        paths = reports.write_test_report(REPORT, tmp_path)
    assert set(paths) == {"metrics", "per_class"}
    assert (tmp_path / "test_metrics.json").is_file() and (tmp_path / "test_per_class.csv").is_file()
    assert not (tmp_path / "confusion_matrix.png").exists()
    with pytest.raises(ImportError, match=re.escape("video_cnn_rnn[plots]")):
        reports.plot_confusion_matrix(REPORT["confusion_matrix"], REPORT["class_names"], tmp_path / "cm.png")


def test_test_report_with_matplotlib_draws_the_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = reports.write_test_report(REPORT, tmp_path)
    assert paths["confusion_matrix"].stat().st_size > 0
