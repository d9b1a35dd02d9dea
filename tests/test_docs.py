"""The documentation works as written: Getting started's route to a trained model on your own folder of videos,
and a README short enough to be a landing page whose links all resolve.

The commands are read from ``docs/getting-started.md`` (the bash blocks after a ``<!-- test-docs -->`` line), so the
page and this test cannot drift apart. The one substitution: the page loads ImageNet weights for efficientnet_lite0
(``--model.pretrained true``), and tests load none, so here that flag becomes timm's tiny ``test_efficientnet``
without weights. Everything else runs as printed, and what a newcomer reads is checked too: fit's summary, and no
known third-party warning anywhere.
"""

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from video_cnn_rnn.data.synthetic import make_clip, write_video
from video_cnn_rnn.verbosity import EVALUATION_WARNINGS, THIRD_PARTY_LOG_LINES, THIRD_PARTY_WARNINGS

ROOT = Path(__file__).resolve().parents[1]
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
README = ROOT / "README.md"
MARKER = "<!-- test-docs -->"
SUBSTITUTIONS = {"--model.pretrained true": "--model.backbone test_efficientnet --model.pretrained false"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def marked_commands(markdown: str) -> list[str]:
    """The shell commands of the bash blocks that follow a ``MARKER`` line, continuation lines joined."""
    commands = []
    for block in re.findall(re.escape(MARKER) + r"\s*\n```bash\n(.*?)\n```", markdown, flags=re.DOTALL):
        commands += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return commands


def write_class_folders(root: Path, per_class: int, seed: int) -> None:
    """``root/<class>/*.mp4|avi``: two synthetic classes (a growing and a shrinking disc) at 48x40 px."""
    rng = np.random.default_rng(seed)
    for label in ("disc_grow", "disc_shrink"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            clip = make_clip(label, int(rng.integers(8, 13)), 48, 40, rng)
            write_video(root / label / f"{label}_{i}.{'mp4' if i % 2 else 'avi'}", clip)


def test_getting_started_commands_are_found() -> None:
    commands = marked_commands(GETTING_STARTED.read_text())
    assert [shlex.split(c)[:2] for c in commands] == [
        ["video-cnn-rnn", "fit"],
        ["video-cnn-rnn", "test"],
        ["video-cnn-rnn", "predict"],
        ["video-cnn-rnn", "save_pretrained"],
    ]
    for flag in SUBSTITUTIONS:
        assert flag in commands[0], f"the page no longer shows {flag!r}: update SUBSTITUTIONS"


@pytest.mark.slow
def test_getting_started_trains_on_a_folder_of_videos(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "my_videos", per_class=5, seed=0)
    write_class_folders(tmp_path / "my_test_videos", per_class=2, seed=1)
    outputs = []
    for command in marked_commands(GETTING_STARTED.read_text()):
        for flag, replacement in SUBSTITUTIONS.items():
            command = command.replace(flag, replacement)
        args = shlex.split(command)
        assert args[0] == "video-cnn-rnn"
        result = subprocess.run(
            [sys.executable, "-m", "video_cnn_rnn", *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
        noise = [
            p for p in (*THIRD_PARTY_WARNINGS, *EVALUATION_WARNINGS) if re.search(p, result.stdout + result.stderr)
        ]
        noise += [line for line in THIRD_PARTY_LOG_LINES if line in result.stdout + result.stderr]
        assert not noise, f"{command}: third-party noise {noise}\n{result.stderr[-3000:]}"

    # What the page says each step leaves behind: one run folder, the evaluations inside it.
    run = tmp_path / "runs/mine/version_0"
    assert (run / "checkpoints/best.ckpt").is_file() and (run / "metrics.csv").is_file()
    assert (run / "test/test_metrics.json").is_file() and (run / "test/test_predictions.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "runs/mine").iterdir()) == ["version_0"]  # no version_N per command
    with (tmp_path / "my_predictions/predictions.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 4
    assert (tmp_path / "models/mine/config.json").is_file() and (tmp_path / "models/mine/model.safetensors").is_file()

    # fit's summary, on its own lines after the progress bars: classes, the split, the best checkpoint, what next.
    summary = outputs[0][outputs[0].index("\nfit done.") :]
    assert "classes (2): disc_grow, disc_shrink" in summary
    assert re.search(r"\n  disc_grow +4 +1\n", summary), summary  # 5 videos a class: 4 train, 1 validation
    assert "validation: 20% of data.train held out" in summary
    assert "best checkpoint: runs/mine/version_0/checkpoints/best.ckpt (val_loss " in summary
    assert "next: video-cnn-rnn test --ckpt_path runs/mine/version_0/checkpoints/best.ckpt" in summary
    assert "\ntest done: accuracy " in outputs[1] and "reports: runs/mine/version_0/test" in outputs[1]
    assert re.search(r"\nmy_test_videos/disc_grow/disc_grow_0.avi\n  disc_\w+: +[\d.]+%\n", outputs[2])  # top 3


def test_readme_is_a_landing_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_resolve() -> None:
    """Every relative link of README.md names a file of the repository, and an anchor one of its headings
    (GitHub's and MkDocs' slugs agree for these headings: lower case, punctuation dropped, spaces to hyphens)."""
    text = README.read_text()
    links = [link for link in LINK.findall(text) if not link.startswith(("http://", "https://", "mailto:"))]
    assert links, "README.md links into the documentation"
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        assert target.is_file(), f"README.md links to {link}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+\s+(.*)$", target.read_text(), flags=re.MULTILINE)
            slugs = {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings}
            assert anchor in slugs, f"README.md links to {link}: no heading {anchor!r} in {path or 'README.md'}"
