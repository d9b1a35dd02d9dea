"""The command line a newcomer meets first: help that answers at once and names the common flags first (each a real
flag with the parser's default), one line for a typo, and third-party noise filtered unless --verbose."""

import subprocess
import sys
import warnings
from typing import Any

import pytest
import yaml

from video_cnn_rnn import verbosity
from video_cnn_rnn.cli import main, run_cli
from video_cnn_rnn.cli_help import COMMON_FLAGS, short_help, unknown_flag_line

FIRST_RUN_FLAGS = ("--data.train", "--data.num_frames", "--model.backbone", "--trainer.max_epochs")


def test_help_answers_without_importing_torch_or_lightning() -> None:
    script = """
import sys
from video_cnn_rnn.launcher import main
try:
    main(["fit", "--help"])
except SystemExit as exit_:
    assert exit_.code == 0, exit_.code
print(sorted(name for name in ("torch", "lightning", "timm") if name in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert result.stdout.startswith("usage: video-cnn-rnn fit")


def test_fit_help_names_the_first_run_flags_in_its_first_40_lines() -> None:
    first = "\n".join(short_help("fit").splitlines()[:40])
    assert all(flag in first for flag in FIRST_RUN_FLAGS), first
    assert "--help-all" in short_help("fit")  # and says where the rest are


@pytest.mark.parametrize(("subcommand", "own"), [("test", "--data.test"), ("predict", "--data.predict")])
def test_evaluation_help_leads_with_its_own_flags(subcommand: str, own: str) -> None:
    flags = [line.split()[0] for line in short_help(subcommand).splitlines() if line.startswith("    --")]
    assert flags[:2] == ["--ckpt_path", own]
    assert not any(flag.startswith(("--model.", "--trainer.max_epochs")) for flag in flags)


def _value(config: dict[str, Any], flag: str) -> Any:
    """The value of ``--a.b.c`` in a printed config, through ``init_args`` of class-path values."""
    node: Any = config
    for key in flag.removeprefix("--").split("."):
        if key not in node and "init_args" in node:
            node = node["init_args"]
        assert key in node, f"{flag}: no such key in the parser's config"
        node = node[key]
    return node


def _shows(shown: str, value: Any) -> bool:
    if shown in ("none", "true", "false"):
        return value == {"none": None, "true": True, "false": False}[shown] or value == shown  # data.balance: "none"
    try:
        return float(shown) == value
    except ValueError:  # a word: the value itself, or what the unset value means ("by the hardware")
        return value is None or str(value) == shown


def test_every_common_flag_is_the_parsers_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    for subcommand, groups in COMMON_FLAGS.items():
        with pytest.raises(SystemExit):
            run_cli([subcommand, "--print_config"])
        config = yaml.safe_load(capsys.readouterr().out)
        for flag, shown, _ in (flag for flags in groups.values() for flag in flags):
            if flag != "--config":
                value = _value(config, flag)
                assert _shows(shown, value), f"{subcommand} {flag}: help says {shown!r}, the parser has {value!r}"


def test_a_mistyped_flag_fails_in_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.train", "my_videos", "--data.num_frame", "8"])  # no prefix matching: a typo
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "unknown flag --data.num_frame (did you mean --data.num_frames" in lines[0]


def test_verbose_brings_the_usage_back(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verbosity, "_verbose", False)  # main() sets it for the process
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--verbose", "--data.num_frams", "8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "unrecognized arguments: --data.num_frams" in err


def test_unknown_flag_line_only_rewrites_unknown_flags() -> None:
    known = ["--data.num_frames", "--data.img_size", "--model.head"]
    line = unknown_flag_line("video-cnn-rnn fit", "unrecognized arguments: --data.img_sise=64 --model.hed gru", known)
    assert line == (
        "video-cnn-rnn fit: error: unknown flag --data.img_sise (did you mean --data.img_size?), "
        "--model.hed (did you mean --model.head?); see video-cnn-rnn fit --help"
    )
    assert unknown_flag_line("video-cnn-rnn fit", 'Parser key "data.num_frames": expected an int', known) is None


def _caught(subcommand: str | None, *messages: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verbosity.quiet_third_party(subcommand)
        for message in messages:
            warnings.warn(message, UserWarning, stacklevel=1)
    return [str(warning.message) for warning in caught]


def test_known_third_party_warnings_are_filtered_and_ours_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verbosity, "_verbose", False)
    seed, dirpath, ours = (
        "No seed found, seed set to 0",
        "The dirpath has changed from 'a' to 'b'",
        "corrupt.mp4: skipped",
    )
    assert _caught("test", seed, dirpath, ours) == [ours]
    assert _caught("fit", dirpath) == [dirpath]  # in a resumed fit, a moved checkpoint folder is news
    monkeypatch.setenv(verbosity.VARIABLE, "1")
    assert _caught("test", seed, dirpath) == [seed, dirpath]
