"""Class balance (``data.balance``): training counts, inverse-frequency loss weights, and ``BalancedSampler``'s
class-balanced draw (its distribution, its DDP shares and its exact mid-epoch resume)."""

import io
import random
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from video_cnn_rnn.data.balance import (
    check_balance,
    count_classes,
    describe_balance,
    index_labels,
    inverse_frequency,
    loss_weights,
)
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.resumable import BalancedSampler, ResumableDataLoader, ResumableSampler
from video_cnn_rnn.models import VideoClassifier


class Labelled(Dataset):
    """Item ``i`` is ``(i, random.random())``: which index was loaded, and its seeded random draw."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, random.random()


# 90 clips of class 0, 10 of class 1: a 9:1 imbalance.
LABELS = [0] * 90 + [1] * 10


def _draw(labels: list[int], epoch: int, seed: int = 7, **kwargs) -> list[int]:
    sampler = BalancedSampler(Labelled(labels), labels, seed=seed, **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_inverse_frequency_gives_every_clip_an_expected_weight_of_one() -> None:
    weights = inverse_frequency([6, 2, 0])
    assert weights == pytest.approx([8 / 12, 2.0, 1.0])  # N / (C * n_c) over the 2 classes with clips
    assert (6 * weights[0] + 2 * weights[1]) / 8 == pytest.approx(1.0)
    assert inverse_frequency([5, 5]) == [1.0, 1.0]


def test_balanced_draw_gives_each_class_about_the_same_share() -> None:
    draws = [index for epoch in range(20) for index in _draw(LABELS, epoch)]
    assert len(draws) == 20 * len(LABELS)  # an epoch is as long as the split
    minority = sum(LABELS[index] == 1 for index in draws)
    expected = len(draws) / 2
    chi_square = 2 * (minority - expected) ** 2 / expected  # two classes, one degree of freedom
    assert chi_square < 10.83, f"class 1 drawn {minority} of {len(draws)} times (p < 0.001 for a fair draw)"
    # Within the minority class every clip comes up, about equally often.
    per_clip = Counter(index for index in draws if LABELS[index] == 1)
    assert len(per_clip) == 10 and min(per_clip.values()) > 0.5 * max(per_clip.values())


def test_draw_depends_on_seed_and_epoch_only() -> None:
    torch.manual_seed(0)
    first = _draw(LABELS, epoch=3)
    torch.manual_seed(1)  # a rank's global RNG state must not change its draw
    assert _draw(LABELS, epoch=3) == first
    assert _draw(LABELS, epoch=4) != first
    assert _draw(LABELS, epoch=3, seed=8) != first


def test_ranks_take_disjoint_positions_of_one_shared_draw() -> None:
    labels = LABELS[:99]  # 99 = 3 x 33: no padding, so the ranks' shares rebuild the one-process draw
    whole = _draw(labels, epoch=1)
    shares = [_draw(labels, epoch=1, num_replicas=3, rank=rank) for rank in range(3)]
    assert [len(share) for share in shares] == [33, 33, 33]
    assert [shares[i % 3][i // 3] for i in range(99)] == whole
    assert isinstance(BalancedSampler(Labelled(labels), labels), DistributedSampler)  # Lightning keeps it under DDP


def test_uneven_split_draws_as_many_for_every_rank() -> None:
    shares = [_draw(LABELS[:7], epoch=0, num_replicas=2, rank=rank) for rank in range(2)]
    assert [len(share) for share in shares] == [4, 4]


def test_mid_epoch_resume_gives_the_rest_of_the_draw_with_the_same_item_draws() -> None:
    def loader() -> ResumableDataLoader:
        dataset = Labelled(LABELS)
        sampler = BalancedSampler(dataset, LABELS, seed=5)
        return ResumableDataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=list)

    uninterrupted = loader()
    uninterrupted.sampler.set_epoch(2)
    batches, state = [], None
    for batch in uninterrupted:
        batches.append(batch)
        if len(batches) == 5:
            buffer = io.BytesIO()
            torch.save(uninterrupted.state_dict(), buffer)
            state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    resumed = loader()
    resumed.load_state_dict(state)
    assert list(resumed) == batches[5:]


def test_the_sampler_needs_one_label_per_item() -> None:
    with pytest.raises(ValueError, match="3 labels for 4 items"):
        BalancedSampler(Labelled([0, 1, 0, 1]), [0, 1, 0])


def test_index_labels_and_counts_of_a_repeated_video_dataset() -> None:
    dataset = VideoDataset([("a.mp4", 0), ("b.mp4", 1), ("c.mp4", 1)], repeats=2)
    assert index_labels(dataset) == [0, 1, 1, 0, 1, 1]  # index i is item i % 3
    assert count_classes(dataset, ["x", "y", "z"]) == {"x": 1, "y": 2, "z": 0}  # a repeated video counts once
    with pytest.raises(ValueError, match="no 'val' split yet"):
        count_classes(None, ["x"], "val")


class Data:
    """The two things ``loss_weights`` reads from a data module."""

    def __init__(self, balance: str, counts: dict[str, int]) -> None:
        self.balance, self.counts = balance, counts

    def class_counts(self, split: str) -> dict[str, int]:
        return self.counts


def test_loss_weights_only_with_balance_loss_and_never_against_given_weights() -> None:
    counts = {"a": 30, "b": 10}
    assert loss_weights(Data("loss", counts), None) == pytest.approx([40 / 60, 2.0])
    assert loss_weights(Data("sampler", counts), None) is None
    assert loss_weights(None, [1.0, 1.0]) is None  # fit with plain DataLoaders: no data module
    assert loss_weights(Data("loss", counts), [40 / 60, 2.0]) == pytest.approx([40 / 60, 2.0])  # a resumed run's
    with pytest.raises(ValueError, match="set model.class_weights: null, or data.balance: none"):
        loss_weights(Data("loss", counts), [1.0, 1.0])


def test_describe_balance_names_the_counts_and_what_was_applied() -> None:
    counts = {"a": 30, "b": 10}
    assert describe_balance("none", counts) == "class balance: none (training counts a 30, b 10)"
    assert "sampler" in describe_balance("sampler", counts)
    assert describe_balance("loss", counts).startswith("class balance: loss weights a 0.67, b 2.00")


def _imbalanced_csv(synthetic_root: Path, folder: Path) -> Path:
    """3 clips of ``disc_grow``, 1 of ``disc_shrink`` (absolute paths)."""
    rows = [row.split(",") for row in (synthetic_root / "train.csv").read_text().splitlines()[1:]]
    grow = [path for path, tag in rows if tag == "disc_grow"]
    shrink = [path for path, tag in rows if tag == "disc_shrink"]
    chosen = [(path, "disc_grow") for path in grow[:3]] + [(shrink[0], "disc_shrink")]
    csv_path = folder / "imbalanced.csv"
    csv_path.write_text("video_name,tag\n" + "".join(f"{synthetic_root / path},{tag}\n" for path, tag in chosen))
    return csv_path


def _data(csv_path: Path, balance: str) -> VideoDataModule:
    settings = dict(num_frames=4, img_size=32, batch_size=2, num_workers=0, val_fraction=0.0)
    return VideoDataModule(train=str(csv_path), balance=balance, **settings)


def test_fit_with_balance_loss_gives_the_model_the_training_splits_weights(synthetic_root: Path, tmp_path: Path):
    data = _data(_imbalanced_csv(synthetic_root, tmp_path), "loss")
    model = VideoClassifier(backbone="test_efficientnet", class_names=data.class_names, num_frames=4, img_size=32)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, data)  # from Python, as the CLI does: the model takes the weights at setup
    assert data.balance == "loss" and data.class_counts("train") == {"disc_grow": 3, "disc_shrink": 1}
    torch.testing.assert_close(model.class_weights, torch.tensor([4 / 6, 2.0]))
    assert model.hparams.class_weights == pytest.approx([4 / 6, 2.0])  # recorded: checkpoints say what trained them


def test_balance_sampler_gives_the_training_loader_a_balanced_sampler(synthetic_root: Path, tmp_path: Path):
    csv_path = _imbalanced_csv(synthetic_root, tmp_path)
    for balance, sampler_type in (("sampler", BalancedSampler), ("none", ResumableSampler)):
        data = _data(csv_path, balance)
        data.setup("fit")
        assert type(data.train_dataloader().sampler) is sampler_type


def test_balance_is_checked_where_the_data_module_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.balance must be one of none, sampler, loss"):
        VideoDataModule(balance="weights")
    with pytest.raises(ValueError, match="data.balance: loss needs the training annotations' labels"):
        check_balance("loss", streaming="s3://bucket/shards")
