"""Cross-validation: fold files and made folds, errors before any training, and a run through fit and test."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.crossval import (
    LINEAR_PROBE,
    Fold,
    check_folds,
    cv_main,
    folds_from_folder,
    format_report,
    group_function,
    stratified_group_folds,
    write_folds,
)
from video_cnn_rnn.data.annotations import ManifestError, read_source


def recordings(sequences: int = 10, classes: int = 3) -> list[tuple[str, str]]:
    """UT-Interaction-like items: every sequence (group) holds one clip of every class."""
    return [(f"/videos/seq{s}_c{c}.avi", f"class_{c}") for s in range(sequences) for c in range(classes)]


def sequence_of(path: str) -> str:
    return Path(path).stem.split("_")[0]


def test_made_folds_keep_groups_apart_and_cover_every_item_once() -> None:
    items = recordings()
    folds = stratified_group_folds(items, 5, sequence_of, seed=0)
    assert len(folds) == 5
    tested = [item for _, test in folds for item in test]
    assert sorted(tested) == sorted(items)  # every item tested exactly once
    for train, test in folds:
        assert not {sequence_of(p) for p, _ in train} & {sequence_of(p) for p, _ in test}
        assert set(train) | set(test) == set(items)
        assert Counter(label for _, label in test) == Counter({f"class_{c}": 2 for c in range(3)})


def test_made_folds_balance_classes_when_groups_hold_one_class() -> None:
    items = [(f"/v/{label}_g{g}_c{c}.avi", label) for label in "ab" for g in range(6) for c in range(2)]
    folds = stratified_group_folds(items, 3, lambda p: Path(p).stem.rsplit("_", 1)[0], seed=1)
    for _, test in folds:
        assert Counter(label for _, label in test) == {"a": 4, "b": 4}


def test_made_folds_are_seeded() -> None:
    items = recordings()
    assert stratified_group_folds(items, 5, sequence_of, 3) == stratified_group_folds(items, 5, sequence_of, 3)


def test_too_few_groups_is_an_error() -> None:
    with pytest.raises(ManifestError, match="3 groups cannot make 5 folds"):
        stratified_group_folds(recordings(sequences=3), 5, sequence_of)


def test_group_pattern_takes_the_first_group_and_names_a_file_that_does_not_match() -> None:
    group = group_function(r"set\d+_\d+_(\d+)_")
    assert group("/data/Hugging/set2_37_17_1.avi") == "17"
    with pytest.raises(ManifestError, match="other.avi"):
        group("/data/other.avi")


def test_fold_files_are_read_in_order_and_a_missing_test_file_is_named(tmp_path: Path) -> None:
    for k in (1, 0, 10):
        (tmp_path / f"train_{k}.csv").write_text("video_name,tag\n")
        (tmp_path / f"test_{k}.csv").write_text("video_name,tag\n")
    assert [Path(f.train).name for f in folds_from_folder(tmp_path)] == ["train_0.csv", "train_1.csv", "train_10.csv"]
    (tmp_path / "test_10.csv").unlink()
    with pytest.raises(ManifestError, match="test_10.csv"):
        folds_from_folder(tmp_path)


def test_every_bad_fold_entry_is_named_before_training(synthetic_root: Path, tmp_path: Path) -> None:
    train = read_source(synthetic_root / "train.csv")
    test = read_source(synthetic_root / "test.csv")
    bad_test = [*test, ("/nowhere/missing_clip.mp4", train[0][1]), (train[0][0], "a_class_never_trained")]
    folds = write_folds([(train, test), (train, bad_test)], tmp_path / "folds")
    with pytest.raises(ManifestError) as error:
        check_folds(folds)
    message = str(error.value)
    assert "fold 1" in message and "fold 0" not in message
    assert "missing_clip.mp4" in message and "a_class_never_trained" in message


def test_a_group_column_is_read_in_row_order(tmp_path: Path) -> None:
    from video_cnn_rnn.crossval import read_groups_column

    csv_file = tmp_path / "all.csv"
    csv_file.write_text("video_name,tag,group\na.mp4,x,g1\nb.mp4,y,g1\nc.mp4,x,g2\n")
    assert read_groups_column(csv_file) == ["g1", "g1", "g2"]
    (tmp_path / "plain.csv").write_text("video_name,tag\na.mp4,x\n")
    assert read_groups_column(tmp_path / "plain.csv") is None


def test_report_shows_each_fold_mean_std_and_the_gain_over_the_probe() -> None:
    results = {
        "linear_probe": [{"acc": 0.5, "f1": 0.4}, {"acc": 0.7, "f1": 0.6}],
        "recipe": [{"acc": 0.75, "f1": 0.7}, {"acc": 0.85, "f1": 0.8}],
    }
    report = format_report(results, "linear_probe")
    assert "| linear_probe | 50.0 | 70.0 | 60.0 ± 14.1 | 50.0 ± 14.1 | — | — |" in report
    assert "| recipe | 75.0 | 85.0 | 80.0 ± 7.1 | 75.0 ± 7.1 | +20.0 ± 7.1 | 2/2 |" in report


@pytest.mark.slow
def test_cv_runs_fit_and_test_per_fold_beside_the_linear_probe(synthetic_root: Path, tmp_path: Path) -> None:
    from test_cli import tiny_args

    # The synthetic set's file names carry an index: clips with one index form a group.
    args = [
        "--data", str(synthetic_root / "train.csv"), "--k", "2", "--group_pattern", r"_(\d+)\.",
        "--output", str(tmp_path / "cv"), "--recipe", "gru", "--trainer.max_epochs 1",
        *tiny_args(synthetic_root, tmp_path / "runs"),
        "--trainer.max_epochs", "1", "--data.feature_cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    results = cv_main(args, run_cli)
    assert list(results) == ["linear_probe", "gru"] and all(len(rows) == 2 for rows in results.values())
    # The recipe's folds, fit and test: one feature store entry per video (18), extracted once; the probe (the same
    # frozen features) reads its own store under the output folder, also one entry per video.
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 18
    assert len(list((tmp_path / "cv" / "feature_store").rglob("*.npz"))) == 18
    saved = json.loads((tmp_path / "cv" / "results.json").read_text())
    assert [Fold(**fold) for fold in saved["folds"]] == folds_from_folder(tmp_path / "cv" / "folds")
    for name in results:
        for k in range(2):
            metrics = json.loads((tmp_path / "cv" / name / f"fold_{k}" / "test" / "test_metrics.json").read_text())
            assert metrics["test_acc"] == results[name][k]["acc"]
    # The probe really is a probe: a mean head and one linear layer, trained on every video without validation.
    probe = torch.load(tmp_path / "cv" / "linear_probe" / "fold_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert probe["hyper_parameters"]["head"] == "mean" and probe["hyper_parameters"]["fc_hidden"] is None
    assert probe["datamodule_hyper_parameters"]["val_fraction"] == 0
    assert probe["datamodule_hyper_parameters"]["feature_cache"] == str(tmp_path / "cv" / "feature_store")
    recipe = torch.load(tmp_path / "cv" / "gru" / "fold_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert recipe["hyper_parameters"]["head"] == "gru"
    assert "| linear_probe |" in (tmp_path / "cv" / "results.md").read_text()


def test_the_probe_of_the_fine_tuning_recipe_is_frozen_and_unaugmented(synthetic_root: Path, tmp_path: Path) -> None:
    """The probe's overrides turn off what fine-tuning adds (TSM would refuse a frozen backbone)."""
    config = Path(__file__).resolve().parents[1] / "configs" / "finetune_real.yaml"
    overrides = [
        "--data.train",
        str(synthetic_root / "train.csv"),
        "--data.test",
        "null",
        "--model.pretrained",
        "false",
    ]
    overrides += ["--trainer.logger.init_args.save_dir", str(tmp_path), "--model.temporal_shift", "0.125"]
    cli = run_cli(["--config", str(config), *overrides, *LINEAR_PROBE], run=False)
    assert cli.model.hparams.freeze == "frozen" and cli.model.network.temporal_shift is None
    data = cli.datamodule.hparams
    assert (data.augment, data.train_clips_per_video, data.train_flip) == (False, 1, False)
