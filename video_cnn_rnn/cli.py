"""The ``video-cnn-rnn`` command: LightningCLI's fit / validate / test / predict, plus extract, synthetic and cv.

video-cnn-rnn fit --config configs/demo.yaml
video-cnn-rnn test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt
video-cnn-rnn predict --config configs/demo.yaml --ckpt_path ... --data.predict path/to/videos
video-cnn-rnn extract --config configs/demo.yaml --data.feature_cache runs/cache  # frozen-backbone features
video-cnn-rnn synthetic data/synthetic                         # write the embedded demo dataset
video-cnn-rnn cv --folds path/to/folds --config ...           # k-fold cross-validation beside a linear probe
"""

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.trainer.states import TrainerFn

from video_cnn_rnn.data.annotations import ManifestError, class_names_from, read_source
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.reports import RunReports

# Settings that decide what a clip looks like and how a video is evaluated: the data module's are the truth when
# training; a checkpoint's (saved in the model's hyperparameters) are the truth when evaluating or predicting with
# it, so test, predict and predict_video give one checkpoint the same answer.
FRAME_SETTINGS: tuple[str, ...] = ("num_frames", "img_size", "sampling", "test_clips", "test_flip")


def check_same_classes(checkpoint_classes: list[str], data_classes: list[str], source: str) -> None:
    """A checkpoint's label ids are its class list's order: data labelled with other names would be scored wrong."""
    if list(checkpoint_classes) == list(data_classes):
        return
    only_checkpoint = sorted(set(checkpoint_classes) - set(data_classes))
    only_data = sorted(set(data_classes) - set(checkpoint_classes))
    details = [f"only in the checkpoint: {only_checkpoint}"] if only_checkpoint else []
    details += [f"only in {source}: {only_data}"] if only_data else []
    if not details:
        details = [f"same names in another order: checkpoint {list(checkpoint_classes)}, data {list(data_classes)}"]
    raise ManifestError(
        f"the checkpoint's classes differ from the labels of {source}; evaluate it on data with its classes "
        f"({'; '.join(details)})"
    )


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
                "checkpoint.monitor": "val_loss",  # the seeds keep the best val_loss model
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(RunReports, "reports")

    def before_instantiate_classes(self) -> None:
        if not self.subcommand and self.checkpoint:
            self._take_checkpoint_hparams(self.checkpoint)
        config = self.config[self.subcommand] if self.subcommand else self.config
        model, data = config.model, config.data
        evaluated = self.checkpoint if not self.subcommand else config.get("ckpt_path")
        evaluating_checkpoint = self.subcommand != "fit" and evaluated and model.get("class_names")
        if evaluating_checkpoint:
            for key in FRAME_SETTINGS:
                if key in model:  # checkpoints saved before a setting existed keep the data's value
                    data[key] = model[key]
            if data.get("train"):
                source = f"data.train ({data.train})"
                check_same_classes(
                    model.class_names, class_names_from(read_source(data.train, data.get("video_root"))), source
                )
            return
        for key in FRAME_SETTINGS:
            model[key] = data[key]
        if data.get("train"):
            # The vocabulary comes from the training annotations (sorted unique labels, the seed's StringLookup).
            model.class_names = class_names_from(read_source(data.train, data.get("video_root")))
            model.num_classes = len(model.class_names)

    def _take_checkpoint_hparams(self, path: str) -> None:
        """What LightningCLI does for a subcommand's ``--ckpt_path``: the checkpoint's hparams override the config."""
        hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        if hparams:
            self.config = self.parser.parse_object({"model": hparams}, self.config)

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
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["state_dict"])
            if self.datamodule.class_names is None:
                self.datamodule.class_names = self.model.class_names
        if self.datamodule.hparams.feature_cache and self.subcommand != "predict":
            folder = self.datamodule.prepare_feature_cache(self.model, self.trainer)
            if self.trainer.is_global_zero:
                print(f"using feature cache {folder}")

    before_fit = before_validate = before_test = before_predict = prepare_run


def run_cli(args: list[str] | None = None, run: bool = True, checkpoint: str | None = None) -> VideoCLI:
    return VideoCLI(
        VideoClassifier,
        VideoDataModule,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model takes optimizer / lr_scheduler callables itself
        args=args,
        run=run,
        checkpoint=checkpoint,
    )


def synthetic_main(args: list[str]) -> None:
    import argparse

    from video_cnn_rnn.data.synthetic import generate_synthetic_dataset

    parser = argparse.ArgumentParser(prog="video-cnn-rnn synthetic", description="Write the embedded demo dataset.")
    parser.add_argument("root", nargs="?", default="data/synthetic")
    parser.add_argument("--train-per-class", type=int, default=24)
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    root = generate_synthetic_dataset(options.root, options.train_per_class, options.test_per_class, seed=options.seed)
    print(f"synthetic dataset ready: {root / 'train.csv'}, {root / 'test.csv'}")


# The subcommands main() adds to LightningCLI's, shown with its --help.
EXTRA_SUBCOMMANDS = """more subcommands (each with its own --help):
  extract    build the frozen-backbone feature cache (--config ..., optionally --ckpt_path X)
  cv         k-fold cross-validation through fit and test, beside a linear probe
  synthetic  write the embedded demo dataset
"""


def main(args: list[str] | None = None) -> None:
    # A frozen backbone is kept in eval mode on purpose (BatchNorm statistics must not move).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    argv = sys.argv[1:] if args is None else args
    if argv[:1] in (["-h"], ["--help"]):
        print(EXTRA_SUBCOMMANDS)
    try:
        if argv and argv[0] == "synthetic":
            synthetic_main(argv[1:])
        elif argv and argv[0] == "cv":
            from video_cnn_rnn.crossval import cv_main

            cv_main(argv[1:])
        elif argv and argv[0] == "extract":
            from video_cnn_rnn.cache import extract_main

            extract_main(argv[1:])
        else:
            run_cli(args)  # None: LightningCLI reads sys.argv itself
    except (ManifestError, FileNotFoundError) as error:
        # Configuration and dataset problems: a readable message, not a traceback, before any training.
        print(f"video-cnn-rnn: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
