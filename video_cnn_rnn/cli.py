"""The ``video-cnn-rnn`` command: LightningCLI runs fit / validate / test / predict (``VideoCLI``), ``main`` the
other subcommands. The subcommands and what each does are one table, ``cli_help.SUBCOMMANDS`` (``video-cnn-rnn
--help`` prints it); examples of each are in docs/getting-started.md and the pages it links.
"""

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from video_cnn_rnn import verbosity
from video_cnn_rnn.cli_help import LIGHTNING_SUBCOMMANDS, PROG, SUBCOMMANDS, help_request, unknown_flag_line
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.decode import check_window
from video_cnn_rnn.data.frame_settings import FRAME_SETTINGS
from video_cnn_rnn.data.synthetic import generate_synthetic_dataset
from video_cnn_rnn.errors import load_checkpoint, report
from video_cnn_rnn.extraction import prepare_feature_cache
from video_cnn_rnn.hardware import configure_cuda, default_precision
from video_cnn_rnn.models.classifier import VideoClassifier, upgrade_hparams
from video_cnn_rnn.reports import RunReports
from video_cnn_rnn.summary import cv_summary_lines, print_block, print_summary

# Settings the data module owns and the model records: what a clip looks like and how a video is evaluated
# (FRAME_SETTINGS), and the vocabulary. The CLI links them data -> model. A checkpoint being evaluated (or resumed)
# brings its own, and they go to the data module, so test, predict and predict_video give one checkpoint the same answer.
DATA_OWNED: tuple[str, ...] = (*FRAME_SETTINGS, "class_names")


def checkpoint_run_folder(ckpt_path: str | None) -> Path | None:
    """``<run>`` for a checkpoint in ``<run>/checkpoints/`` whose ``<run>`` holds a logger's files, else None."""
    path = Path(ckpt_path) if ckpt_path else None
    if path is None or not path.is_file() or path.parent.name != "checkpoints":
        return None
    run = path.parent.parent
    return run if any((run / name).is_file() for name in ("hparams.yaml", "metrics.csv", "config.yaml")) else None


class VideoArgumentParser(LightningArgumentParser):
    """LightningCLI's parser without prefix matching (``--data.num_frame`` is a typo, not ``--data.num_frames``), and
    its errors without the usage dump (it comes back with --verbose): an unknown flag in one line naming the closest
    ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or self
        linked = {f"--model.{name}" for name in DATA_OWNED}  # set through data.*: never the flag to suggest
        known = sorted(set(parser._option_string_actions) - linked)
        prog = parser.prog.replace(" [options]", "")
        if verbosity.verbose():
            super().error(message, ex)
        print(unknown_flag_line(prog, message, known) or f"{prog}: error: {message.strip()}", file=sys.stderr)
        raise SystemExit(2)


class VideoCLI(LightningCLI):
    """LightningCLI with the package's default callbacks and the data -> model hand-over.

    ``checkpoint`` is for runs without a subcommand (``extract``): the checkpoint whose hyperparameters and
    weights the model takes, as ``--ckpt_path`` does for fit / validate / test / predict.
    """

    def __init__(self, *args: Any, checkpoint: str | None = None, **kwargs: Any) -> None:
        self.checkpoint = checkpoint
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_loss",  # the Keras examples keep the best val_loss model
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(RunReports, "reports")
        for name in FRAME_SETTINGS:
            parser.link_arguments(f"data.{name}", f"model.{name}")
        # The data module works the vocabulary out from its annotations when it is built.
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        # predict only: with timeline.window_s, one row per sliding window of every video (video_cnn_rnn.timeline).
        parser.add_argument("--timeline.window_s", type=float | None, default=None, help="window length (seconds)")
        parser.add_argument("--timeline.hop_s", type=float, default=1.0, help="step between windows (seconds)")
        parser.add_argument("--timeline.batch_size", type=int, default=16, help="windows per backbone batch")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's: a subcommand's ``--ckpt_path`` hyperparameters override the config (upgraded, and the
        data-owned ones given to the data module)."""
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt_path and Path(ckpt_path).is_file():
            self._take_checkpoint_hparams(ckpt_path, self.config.subcommand)

    def before_instantiate_classes(self) -> None:
        if not self.subcommand and self.checkpoint:
            self._take_checkpoint_hparams(self.checkpoint)
        if self.subcommand in ("validate", "test", "predict"):
            self._log_into_checkpoint_run()
        if self.subcommand == "predict" and self.config.predict.timeline.window_s is not None:
            try:  # a bad window or hop stops here, as a usage error, before anything is built or decoded
                check_window(self.config.predict.timeline.window_s, self.config.predict.timeline.hop_s)
            except ValueError as error:
                self.parser.error(f"--timeline: {error}")
        trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
        if trainer.get("precision") is None:  # none given: the fastest safe one on this machine
            trainer.precision, reason = default_precision(trainer.get("accelerator"))
            rank_zero_info(f"precision {trainer.precision}: {reason} (choose another with --trainer.precision)")

    def _log_into_checkpoint_run(self) -> None:
        """An evaluation of a checkpoint that fit saved in its run folder (``<run>/checkpoints/x.ckpt``, Lightning's
        default) logs into ``<run>/<subcommand>/`` (reports too, unless ``--reports.output_dir``), not into a new
        ``version_N``. Only for a CSVLogger whose version is not given; anything else is left as configured."""
        config = self.config[self.subcommand]
        run = checkpoint_run_folder(config.get("ckpt_path"))
        logger = config.trainer.get("logger")
        if run is None or not str(getattr(logger, "class_path", "")).endswith("CSVLogger"):
            return
        if logger.init_args.get("version") is None:
            logger.init_args.save_dir, logger.init_args.name, logger.init_args.version = str(run), "", self.subcommand

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.trainer.strategy.root_device.type == "cuda":
            for setting in configure_cuda():
                rank_zero_info(f"CUDA: {setting}")

    def _take_checkpoint_hparams(self, path: str, subcommand: str | None = None) -> None:
        hparams = load_checkpoint(path).get("hyper_parameters", {})  # a damaged file: one line naming it
        hparams = upgrade_hparams(hparams)
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        data = {name: hparams.pop(name) for name in DATA_OWNED if name in hparams}
        data = {name: value for name, value in data.items() if value is not None}  # None: the data module's own
        given = (self.config[subcommand] if subcommand else self.config).get("data") or {}
        replaced = [
            f"data.{name} {given.get(name)!r} -> {data[name]!r}"
            for name in FRAME_SETTINGS
            if name in data and given.get(name) != data[name]
        ]
        if replaced:  # said out loud: the command line's, config's or default value is not the one used
            rank_zero_info(f"{path} brings its own frame and evaluation settings: {', '.join(replaced)}")
        config = {"model": hparams, "data": data}
        self.config = self.parser.parse_object({subcommand: config} if subcommand else config, self.config)

    def checkpoint_file(self) -> str | None:
        """The checkpoint this run restores, with Lightning's ``last`` / ``best`` / ``hpc`` resolved to a file."""
        if not self.subcommand:
            return self.checkpoint
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or Path(ckpt_path).is_file():
            return ckpt_path
        # The Trainer resolves these names itself, but only after the before_<subcommand> hooks have run.
        connector = self.trainer._checkpoint_connector
        return connector._parse_ckpt_path(TrainerFn(self.subcommand), ckpt_path, True, False)

    def prepare_run(self) -> None:
        """Before any frame is decoded: the checkpoint's weights in the model, its classes in the data module,
        and, with ``data.feature_cache``, the cache extracted by those weights."""
        checkpoint = self.checkpoint_file()
        if checkpoint:
            # Lightning restores the checkpoint only inside trainer.<subcommand>, after these hooks. Features
            # extracted before then would come from the model as built (a random backbone, since a checkpoint
            # is saved with pretrained=False).
            state = load_checkpoint(checkpoint)
            self.model.load_state_dict(state["state_dict"])
        data = self.datamodule
        if data.hparams.feature_cache and self.subcommand != "predict":
            folder = prepare_feature_cache(data, self.model.network, self.trainer)
            if self.trainer.is_global_zero:
                print(f"using feature cache {folder}")

    before_fit = before_validate = before_test = before_predict = prepare_run

    def predict(self, **kwargs: Any) -> Any:
        """``trainer.predict``, or with ``--timeline.window_s`` the timeline of every video of ``data.predict``
        (after ``prepare_run`` loaded the checkpoint), written where the predictions would be."""
        options = self.config[self.subcommand].timeline
        if options.window_s is None:
            return self.trainer.predict(**kwargs)
        from video_cnn_rnn.timeline import run_timeline

        data, reports = self.datamodule, self.config[self.subcommand].reports
        data.setup("predict")
        self.model.to(self.trainer.strategy.root_device)
        return run_timeline(
            self.model,
            [path for path, _ in data.datasets["predict"].items],
            reports.output_dir or self.trainer.log_dir or self.trainer.default_root_dir,
            options.window_s,
            options.hop_s,
            options.batch_size,
            reports.top_k,
            data.hparams.on_error,
            self.trainer.precision_plugin.forward_context,
        )


def run_cli(args: list[str] | None = None, run: bool = True, checkpoint: str | None = None) -> VideoCLI:
    return VideoCLI(
        VideoClassifier,
        VideoDataModule,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model takes optimizer / lr_scheduler callables itself
        parser_class=VideoArgumentParser,
        # The subcommands' descriptions in full (LightningCLI's are the first lines of the Trainer's docstrings).
        parser_kwargs={"prog": PROG, **{name: {"description": SUBCOMMANDS[name]} for name in LIGHTNING_SUBCOMMANDS}},
        args=args,
        run=run,
        checkpoint=checkpoint,
    )


def extract_main(args: list[str]) -> None:
    """``video-cnn-rnn extract --config ... [--ckpt_path X]``: build (or reuse) the cache for the configured data
    and model; with ``--ckpt_path``, for the checkpoint's backbone weights and frame settings."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--ckpt_path", default=None)
    options, rest = parser.parse_known_args(args)
    cli = run_cli(rest, run=False, checkpoint=options.ckpt_path)
    if not cli.datamodule.hparams.feature_cache:
        raise SystemExit("video-cnn-rnn extract: set data.feature_cache to the cache's root folder")
    cli.prepare_run()
    if cli.trainer.is_global_zero:
        print(f"feature cache ready: {cli.datamodule.cache_view}")


def synthetic_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="video-cnn-rnn synthetic", description="Write the embedded demo dataset.")
    parser.add_argument("root", nargs="?", default="data/synthetic")
    parser.add_argument("--train-per-class", type=int, default=24)
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    root = generate_synthetic_dataset(options.root, options.train_per_class, options.test_per_class, seed=options.seed)
    print(f"synthetic dataset ready: {root / 'train.csv'}, {root / 'test.csv'}")


def save_pretrained_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="video-cnn-rnn save_pretrained",
        description="Write a checkpoint as a portable model folder: model.safetensors, config.json, README.md.",
    )
    parser.add_argument("--ckpt_path", required=True, help="the Lightning checkpoint")
    parser.add_argument("--output", required=True, help="the folder to write (created if missing)")
    options = parser.parse_args(args)
    folder = VideoClassifier.load_from_checkpoint(options.ckpt_path, map_location="cpu").save_pretrained(options.output)
    print(f"model folder ready: {folder} (VideoClassifier.from_pretrained loads it)")


def option_value(args: list[str], flag: str, default: str) -> str:
    """The value of ``flag`` in ``args`` (``--flag X`` or ``--flag=X``), else ``default``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag, default=default)
    return getattr(parser.parse_known_args(args)[0], flag.lstrip("-"))


def main(args: list[str] | None = None) -> None:
    # A frozen backbone is kept in eval mode on purpose (BatchNorm statistics must not move).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    argv = sys.argv[1:] if args is None else args
    command = verbosity.take_verbose_flag(argv)  # the command line's own flag: no subcommand parser knows it
    text = help_request(command)
    if text is not None:  # the subcommands and their common flags, without building LightningCLI's parser
        print(text, end="")
        raise SystemExit(0 if command else 2)
    command = ["--help" if arg == "--help-all" else arg for arg in command]
    verbosity.quiet_third_party(command[0])
    verbosity.show_package_logs()
    name, rest = command[0], command[1:]
    try:
        # The optional subcommands' modules are imported only when asked for (the command starts faster).
        if name == "synthetic":
            synthetic_main(rest)
        elif name == "shard":
            from video_cnn_rnn.data.shards.writer import shard_main  # LitData: the streaming extra

            shard_main(rest)
        elif name == "proxy":
            from video_cnn_rnn.proxying import proxy_main

            proxy_main(rest)
        elif name == "cv":
            from video_cnn_rnn.crossval import cv_main

            cv_main(rest, run_cli)
            print_block(cv_summary_lines(Path(option_value(rest, "--output", "runs/cv"))))
        elif name == "extract":
            extract_main(rest)
        elif name == "save_pretrained":
            save_pretrained_main(rest)
        elif name == "serve":
            from video_cnn_rnn.serve import serve_main

            serve_main(rest)
        elif name == "export":
            from video_cnn_rnn.export import export_main

            export_main(rest)
        else:
            if args is None:  # LightningCLI reads sys.argv itself (given args, it warns that both are set)
                sys.argv[1:] = command
            print_summary(run_cli(None if args is None else command), command)
    except Exception as error:
        # Bad input (configuration, annotations, videos, checkpoints, stores, shards): one line naming the file and
        # what to do, exit code 2 or 1 (video_cnn_rnn.errors); a bug keeps its traceback.
        report(error, argv)


if __name__ == "__main__":
    main()
