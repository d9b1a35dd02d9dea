"""The ``video-cnn-rnn`` command: LightningCLI's fit / validate / test / predict, plus two helpers.

video-cnn-rnn fit --config configs/demo.yaml
video-cnn-rnn test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt
video-cnn-rnn predict --config configs/demo.yaml --ckpt_path ... --data.predict path/to/videos
video-cnn-rnn extract --config configs/demo_cached.yaml       # frozen-backbone feature cache
video-cnn-rnn synthetic data/synthetic                         # write the embedded demo dataset
"""

import sys
import warnings

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from video_cnn_rnn.data.annotations import ManifestError, class_names_from, read_source
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.reports import RunReports

# Settings that decide what a clip looks like: the data module's are the truth when training; a checkpoint's
# (saved in the model's hyperparameters) are the truth when evaluating or predicting with it.
FRAME_SETTINGS: tuple[str, ...] = ("num_frames", "img_size", "sampling")


class VideoCLI(LightningCLI):
    """LightningCLI with the package's default callbacks and the data -> model hand-over."""

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
        config = self.config[self.subcommand] if self.subcommand else self.config
        model, data = config.model, config.data
        evaluating_checkpoint = self.subcommand != "fit" and config.get("ckpt_path") and model.get("class_names")
        if evaluating_checkpoint:
            for key in FRAME_SETTINGS:
                data[key] = model[key]
            return
        for key in FRAME_SETTINGS:
            model[key] = data[key]
        if data.get("train"):
            # The vocabulary comes from the training annotations (sorted unique labels, the seed's StringLookup).
            model.class_names = class_names_from(read_source(data.train, data.get("video_root")))
            model.num_classes = len(model.class_names)

    def _prepare_feature_cache(self) -> None:
        if self.datamodule.hparams.feature_cache:
            folder = self.datamodule.prepare_feature_cache(self.model, self.trainer)
            if self.trainer.is_global_zero:
                print(f"using feature cache {folder}")

    before_fit = before_validate = before_test = _prepare_feature_cache


def run_cli(args: list[str] | None = None, run: bool = True) -> VideoCLI:
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


def main(args: list[str] | None = None) -> None:
    # A frozen backbone is kept in eval mode on purpose (BatchNorm statistics must not move).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    argv = sys.argv[1:] if args is None else args
    try:
        if argv and argv[0] == "synthetic":
            synthetic_main(argv[1:])
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
