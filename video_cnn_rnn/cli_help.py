"""The command line's own help: the subcommands in full, each LightningCLI subcommand's common flags first, and one
line for a mistyped flag.

``video-cnn-rnn <subcommand> --help`` prints ``short_help``: the handful of flags a first run needs, read from
``COMMON_FLAGS`` without building LightningCLI's parser (which imports torch, Lightning and timm: seconds), and says
how to get the full list (``--help-all``). tests/test_cli_help.py checks every flag and default here against the
real parser, so this text cannot drift from it.

Standard library only: it runs before anything heavy is imported.
"""

import difflib
import re

PROG = "video-cnn-rnn"
FULL_HELP = "--help-all"
DOCS = "docs/api.md (the API reference) and docs/getting-started.md"

# name -> what it does, in full (LightningCLI would show the first line of the Trainer method's docstring).
SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model (a validation split is held out of data.train unless data.val is given)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on data.test: accuracy, per-class report, confusion matrix, every prediction",
    "predict": "classify videos without labels (data.predict: a file, a folder, a list or a CSV); top-k per video",
    "extract": "build the frozen-backbone feature cache (--config ..., optionally --ckpt_path X)",
    "cv": "k-fold cross-validation through fit and test, beside a linear probe",
    "export": "a checkpoint as ONNX, TorchScript or a torch.export program, plus a JSON sidecar",
    "synthetic": "write the embedded demo dataset",
    "shard": "write annotation sources as LitData shards for data.streaming (--train ... --output DIR_OR_URL)",
    "proxy": "build the proxies data.proxy_cache decodes (SOURCES... --proxy_cache DIR --img_size N --crop C)",
    "save_pretrained": "write a checkpoint as a portable model folder (--ckpt_path X --output DIR)",
    "serve": "a local browser demo of a checkpoint or model folder (pip install 'video_cnn_rnn[serve]')",
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# (flag, default as shown, what it does). The defaults are the parser's (tests/test_cli_help.py).
Flag = tuple[str, str, str]
_CONFIG: Flag = ("--config", "none", "a YAML config (configs/*.yaml); flags after it override it")
_CHECKPOINT: Flag = ("--ckpt_path", "none", "the checkpoint; it brings its classes, model and frame settings")
_PRECISION: Flag = ("--trainer.precision", "by the hardware", "32-true, 16-mixed or bf16-mixed")
_BATCH: Flag = ("--data.batch_size", "8", "videos per batch")
_OUTPUT: Flag = ("--reports.output_dir", "the run folder", "where the report files go")
COMMON_FLAGS: dict[str, dict[str, list[Flag]]] = {
    "fit": {
        "data": [
            ("--data.train", "none", "training videos: a folder of class folders, a CSV or a split file"),
            ("--data.val", "none", "validation videos (else data.val_fraction of data.train is held out)"),
            ("--data.val_fraction", "0.2", "share of data.train held out, stratified and seeded; 0: none"),
            ("--data.test", "none", "test videos, for the test subcommand"),
            ("--data.balance", "none", "uneven classes: none, sampler (rare classes drawn more) or loss (weighted)"),
        ],
        "frames": [
            ("--data.num_frames", "20", "frames sampled per video"),
            ("--data.img_size", "224", "side of the square frames, in pixels"),
            (
                "--data.crop",
                "centre",
                "centre: the centre square; pad: the whole frame, letterboxed; motion: around what moves",
            ),
            _BATCH,
        ],
        "model": [
            ("--model.backbone", "efficientnet_lite0", "any timm model name"),
            ("--model.pretrained", "false", "true: ImageNet weights (the log names the file); or a weights file"),
            ("--model.freeze", "frozen", "frozen, finetune or last_n (the last --model.trainable_blocks)"),
            ("--model.head", "gru", "gru, lstm, transformer, mean or max over the frames"),
        ],
        "training": [
            ("--trainer.max_epochs", "Lightning's 1000", "epochs to train"),
            _PRECISION,
            ("--trainer.accelerator", "auto", "cpu, gpu, mps or auto"),
            ("--model.optimizer.lr", "0.001", "the learning rate (Adam)"),
        ],
        "output": [
            ("--trainer.logger.name", "lightning_logs", "the run folder: runs/<name>/version_N/"),
            ("--checkpoint.dirpath", "run folder", "where best.ckpt and last.ckpt go (else <run folder>/checkpoints)"),
            _CONFIG,
        ],
    },
    "validate": {
        "evaluation": [_CHECKPOINT, ("--data.val", "none", "validation videos (else data.val_fraction of data.train)")],
        "settings": [_BATCH, _PRECISION, _CONFIG],
    },
    "test": {
        "evaluation": [
            _CHECKPOINT,
            ("--data.test", "none", "test videos: a class folder, a CSV or a split file"),
            ("--data.eval_clips", "1", "clips averaged per video"),
            ("--data.eval_flip", "false", "also average each clip mirrored"),
        ],
        "output": [_OUTPUT, _BATCH, _PRECISION, _CONFIG],
    },
    "predict": {
        "prediction": [
            _CHECKPOINT,
            ("--data.predict", "none", "videos to classify: a file, a folder, a list or a CSV"),
            ("--reports.top_k", "5", "classes printed and written per video"),
            ("--reports.gif", "false", "also write an animated GIF per video, with its predicted label"),
            ("--timeline.window_s", "none", "long videos: one prediction per window of this many seconds"),
        ],
        "output": [_OUTPUT, ("--reports.print_predictions", "true", "print each video's top-k"), _BATCH, _CONFIG],
    },
}


def main_help() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    return (
        f"usage: {PROG} <subcommand> [flags]    ({PROG} <subcommand> --help: its common flags)\n\n"
        f"Video classification: a timm CNN on every frame, a GRU / Transformer head over time.\n\n"
        f"subcommands:\n{rows}\n\n"
        f"--verbose (any subcommand) shows every warning and traceback. Docs: docs/getting-started.md\n"
    )


def short_help(subcommand: str) -> str:
    """The common flags of a LightningCLI subcommand, grouped, and where the rest are."""
    groups = COMMON_FLAGS[subcommand]
    flags = [flag for group in groups.values() for flag in group]
    width, default_width = max(len(f[0]) for f in flags), max(len(f[1]) for f in flags)
    lines = [f"usage: {PROG} {subcommand} [flags]", "", f"{SUBCOMMANDS[subcommand]}.", ""]
    lines.append(f"{'common flags:':<{width + 6}}default")
    for group, members in groups.items():
        lines.append(f"  {group}")
        lines += [f"    {flag:<{width}}  {default:<{default_width}}  {text}" for flag, default, text in members]
    lines += [
        "",
        f"every flag (model, data, trainer, checkpoint, reports): {PROG} {subcommand} {FULL_HELP}",
        "--print_config prints a full YAML config; --verbose shows every warning and traceback",
        f"docs: {DOCS}",
    ]
    return "\n".join(lines) + "\n"


def help_request(argv: list[str]) -> str | None:
    """The text to print for ``argv`` when it asks for help that needs no parser, else None."""
    if not argv or argv[0] in ("-h", "--help"):
        return main_help()
    if argv[0] in LIGHTNING_SUBCOMMANDS and any(arg in ("-h", "--help") for arg in argv[1:]):
        return short_help(argv[0])
    return None


_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (?P<args>.*)$", re.S)


def unknown_flag_line(prog: str, message: str, known: list[str]) -> str | None:
    """One line for an "unrecognized arguments" parser error, naming the closest known flags; None for any other."""
    match = _UNRECOGNIZED.match(message.strip())
    if not match:
        return None
    unknown = [arg.split("=", 1)[0] for arg in match["args"].split() if arg.startswith("-")]
    if not unknown:
        return None
    hints = []
    for flag in unknown:
        close = difflib.get_close_matches(flag, known, n=2, cutoff=0.75)
        hints.append(f"{flag} (did you mean {' or '.join(close)}?)" if close else flag)
    return f"{prog}: error: unknown flag {', '.join(hints)}; see {prog} --help"
