"""spatial_pool="attention": per-frame feature maps, pooled by learned attention over space, before every temporal head;
through raw frames, extract_features -> forward_features, the feature cache, checkpoints and model folders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.feature_cache import FeatureCacheDataset
from video_cnn_rnn.extraction import prepare_feature_cache, recipe_key
from video_cnn_rnn.models import VideoClassifier
from video_cnn_rnn.models.spatial import SpatialAttentionPool, position_grid

IMG = 64  # test_efficientnet / test_resnet: a 2 x 2 feature map
STEPS = 4
CLASSES = ["a", "b", "c"]
HEADS: dict[str, dict[str, Any]] = {
    "gru": {"head": "gru"},
    "lstm": {"head": "lstm", "bidirectional": True},
    "transformer": {"head": "transformer", "d_model": 16, "num_heads": 2, "pooling": "mean"},
    "mean": {"head": "mean"},
    "max": {"head": "max"},
}


def make_model(**kwargs: Any) -> VideoClassifier:
    torch.manual_seed(0)
    settings: dict[str, Any] = {
        "backbone": "test_efficientnet",
        "class_names": CLASSES,
        "num_frames": STEPS,
        "img_size": IMG,
        "spatial_pool": "attention",
        **kwargs,
    }
    model = VideoClassifier(**settings)
    # Away from the zero start (every map = average pooling), so position and content matter in every test.
    with torch.no_grad():
        for parameter in model.network.spatial.parameters() if model.network.spatial else []:
            parameter.normal_(0, 0.5)
    return model.eval()


def make_batch(lengths: list[int], seed: int = 0) -> dict[str, Any]:
    """Frames padded with zeros after each clip's real frames, as the collate function pads them."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (len(lengths), STEPS, 3, IMG, IMG), dtype=torch.uint8, generator=generator)
    mask = torch.arange(STEPS).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    frames[~mask] = 0
    return {"frames": frames, "mask": mask, "labels": torch.arange(len(lengths)) % len(CLASSES), "paths": []}


def loss(model: VideoClassifier, batch: dict[str, Any]) -> torch.Tensor:
    return nn.functional.cross_entropy(model.network.batch_logits(batch), batch["labels"])


# ------------------------------------------------------------------------------------------------- the module


def test_position_grid_is_cell_centres_top_left_negative() -> None:
    grid = position_grid(2, 4, torch.zeros(()))
    assert grid.shape == (2, 2, 4)
    assert grid[0, :, 0].tolist() == [-0.5, 0.5]  # y down the rows
    assert grid[1, 0].tolist() == [-0.75, -0.25, 0.25, 0.75]  # x along the columns


def test_pool_starts_as_average_pooling_at_the_centre() -> None:
    pool = SpatialAttentionPool(in_channels=5, num_maps=3)
    maps = torch.randn(2, 5, 3, 4)
    out = pool(maps).view(2, 3, 5 + 2)  # [N, M * (C + 2)] -> [N, M, C + 2]
    assert pool.out_features == 3 * 7
    for index in range(3):
        torch.testing.assert_close(out[:, index, :5], maps.mean(dim=(2, 3)))
        torch.testing.assert_close(out[:, index, 5:], torch.zeros(2, 2))


def test_pool_projects_and_reports_where_it_looked() -> None:
    pool = SpatialAttentionPool(in_channels=1, num_maps=1)
    with torch.no_grad():
        pool.attention.weight.zero_()
        pool.attention.weight[0, 0] = 50.0  # attend to the brightest cell
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 3, 0] = 1.0  # bottom-left
    y, x = pool(maps)[0, 1:].tolist()
    assert y == pytest.approx(0.75, abs=1e-3) and x == pytest.approx(-0.75, abs=1e-3)
    assert SpatialAttentionPool(in_channels=8, num_maps=2, out_features=6)(torch.randn(3, 8, 2, 2)).shape == (3, 6)


def test_attention_tells_apart_what_average_pooling_cannot() -> None:
    """Two classes with the same content in different places (top or bottom half): their average-pooled vectors
    are identical, so a linear layer on them is at chance; attention with positions learns it."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.zeros(64, 4, 4, 4)
    labels = torch.arange(64) % 2
    for index, label in enumerate(labels.tolist()):
        row = int(torch.randint(0, 2, (), generator=generator)) + 2 * label
        column = int(torch.randint(0, 4, (), generator=generator))
        maps[index, :, row, column] = 1.0
    assert torch.equal(maps[labels == 0].mean((2, 3)).unique(dim=0), maps[labels == 1].mean((2, 3)).unique(dim=0))

    torch.manual_seed(0)
    model = nn.Sequential(SpatialAttentionPool(4, num_maps=2), nn.Linear(2 * 6, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(maps), labels).backward()
        optimizer.step()
    assert (model(maps).argmax(-1) == labels).float().mean() == 1.0


# ------------------------------------------------------------------------------------------------- the network


def test_extract_features_returns_maps_with_zero_padding() -> None:
    model = make_model()
    batch = make_batch([STEPS, 2])
    with torch.no_grad():
        real = model.network.extract_features(batch["frames"], batch["mask"])
        every = model.network.extract_features(batch["frames"], batch["mask"], real_frames_only=False)
    channels = model.network.backbone.num_features
    assert real.shape == (2, STEPS, channels, 2, 2)
    assert (real[1, 2:] == 0).all() and (real[0] != 0).any()
    torch.testing.assert_close(real, every, atol=1e-5, rtol=1e-5)
    assert model.network.feature_dim == 4 * (channels + 2)  # spatial_maps 4, no projection


@pytest.mark.parametrize("name", list(HEADS))
def test_raw_frames_and_extracted_maps_give_the_same_logits(name: str) -> None:
    model = make_model(**HEADS[name])
    batch = make_batch([STEPS, 2, 1])
    with torch.no_grad():
        from_frames = model(batch["frames"], batch["mask"])
        features = model.network.extract_features(batch["frames"], batch["mask"])
        exact = model.network.forward_features(features, batch["mask"])
        cached = model.network.batch_logits({"features": features.half(), "mask": batch["mask"]})
    assert from_frames.shape == (3, len(CLASSES))
    torch.testing.assert_close(exact, from_frames)
    torch.testing.assert_close(cached, from_frames, atol=2e-2, rtol=1e-2)  # the cache stores float16


@pytest.mark.parametrize("name", list(HEADS))
def test_padding_does_not_change_a_clip(name: str) -> None:
    model = make_model(**HEADS[name])
    short, full = make_batch([2], seed=1), make_batch([STEPS], seed=2)
    frames, mask = torch.cat([short["frames"], full["frames"]]), torch.cat([short["mask"], full["mask"]])
    with torch.no_grad():
        alone = model(short["frames"][:, :2], short["mask"][:, :2])
        batched = model(frames, mask)
        frames[0, 2:] = 255  # what a padded frame holds does not matter either
        noisy = model(frames, mask)
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(noisy, batched, atol=1e-5, rtol=1e-5)


def test_gradient_reaches_the_attention_and_trains_with_the_head() -> None:
    model = make_model(spatial_dim=16, freeze="frozen").train()
    batch = make_batch([STEPS, 2])
    loss(model, batch).backward()
    spatial = model.network.spatial
    assert spatial.attention.weight.grad is not None and spatial.attention.weight.grad.abs().sum() > 0
    assert spatial.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.network.backbone.parameters())
    model.optimizer_factory = lambda groups: torch.optim.SGD(groups, lr=0.1)
    head_group = model.configure_optimizers().param_groups[0]["params"]
    assert {id(p) for p in spatial.parameters()} <= {id(p) for p in head_group}


def test_a_trainable_backbone_learns_through_its_feature_map() -> None:
    model = make_model(freeze="last_n", trainable_blocks=1).train()
    loss(model, make_batch([STEPS, 2])).backward()
    conv_head = model.network.backbone.conv_head.weight  # after the last stage, before timm's global pool
    assert conv_head.requires_grad and conv_head.grad.abs().sum() > 0


def test_zero_start_gets_a_gradient_too() -> None:
    """The attention starts at zero (uniform maps); the gradient still moves it off."""
    torch.manual_seed(0)
    settings = {"backbone": "test_efficientnet", "num_classes": 3, "num_frames": STEPS, "img_size": IMG}
    model = VideoClassifier(**settings, spatial_pool="attention")
    loss(model, make_batch([STEPS, 3])).backward()
    assert model.network.spatial.attention.weight.grad.abs().sum() > 0


def test_avg_is_the_default_and_unchanged() -> None:
    model = VideoClassifier(backbone="test_efficientnet", num_classes=3, num_frames=STEPS, img_size=IMG)
    assert model.hparams.spatial_pool == "avg" and model.network.spatial is None
    assert not any(".spatial." in key for key in model.state_dict())
    batch = make_batch([2])
    assert model.network.extract_features(batch["frames"], batch["mask"]).shape == (1, STEPS, 256)


def test_attention_settings_without_attention_warn_and_are_not_recorded() -> None:
    with pytest.warns(UserWarning, match="ignores spatial_maps"):
        model = VideoClassifier(backbone="test_efficientnet", num_classes=3, spatial_maps=2)
    assert model.hparams.spatial_maps is None


def test_bad_inputs_fail_readably() -> None:
    with pytest.raises(ValueError, match="spatial_pool"):
        VideoClassifier(backbone="test_efficientnet", num_classes=3, spatial_pool="grid")
    vit = VideoClassifier(backbone="test_vit", num_classes=3, num_frames=STEPS, img_size=32, spatial_pool="attention")
    batch = make_batch([STEPS])
    with pytest.raises(ValueError, match="convolutional backbone"):
        vit(batch["frames"][..., :32, :32], batch["mask"])
    vectors = torch.zeros(1, STEPS, 256)  # features cached by an avg-pooling model
    with pytest.raises(ValueError, match="spatial_pool='avg'"):
        make_model().network.forward_features(vectors, batch["mask"])
    with pytest.raises(ValueError, match="spatial_pool='attention'"):
        make_model(spatial_pool="avg").network.forward_features(torch.zeros(1, STEPS, 256, 2, 2), batch["mask"])


# ------------------------------------------------------------------------------------------------- persistence


def test_checkpoint_and_model_folder_round_trip(tmp_path: Path) -> None:
    model = make_model(spatial_maps=2, spatial_dim=12, **HEADS["transformer"])
    batch = make_batch([STEPS, 2])
    with torch.no_grad():
        expected = model(batch["frames"], batch["mask"])

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = VideoClassifier.load_from_checkpoint(tmp_path / "model.ckpt").eval()
    folder = VideoClassifier.from_pretrained(model.save_pretrained(tmp_path / "folder"))
    for restored in (loaded, folder):
        assert (restored.hparams.spatial_pool, restored.hparams.spatial_maps) == ("attention", 2)
        assert restored.hparams.spatial_dim == 12
        with torch.no_grad():
            torch.testing.assert_close(restored(batch["frames"], batch["mask"]), expected)


# ------------------------------------------------------------------------------------------------- feature cache


@pytest.mark.slow
def test_the_cache_stores_maps_and_the_head_trains_from_them(synthetic_root: Path, tmp_path: Path) -> None:
    def data(cache: str | None) -> VideoDataModule:
        return VideoDataModule(
            train=str(synthetic_root / "train.csv"),
            test=str(synthetic_root / "test.csv"),
            num_frames=STEPS,
            img_size=IMG,
            batch_size=4,
            num_workers=0,
            eval_clips=2,
            feature_cache=cache,
        )

    def model() -> VideoClassifier:
        settings = {"class_names": None, "num_classes": 6, "backbone_batch_size": 8}
        return make_model(**settings, **HEADS["gru"])

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    cached_data, attention = data(str(tmp_path / "cache")), model()
    view = prepare_feature_cache(cached_data, attention.network, trainer)
    channels = attention.network.backbone.num_features
    split = FeatureCacheDataset(view, "test")
    assert split.clips(0).dtype == np.float16 and split.clips(0).shape == (2, STEPS, channels, 2, 2)
    dataset = cached_data.cache_datasets()["test"]
    avg = make_model(spatial_pool="avg", num_classes=6, class_names=None).network
    maps_key = recipe_key(attention.network, dataset, "32-true", "w")
    assert maps_key["frame_features"] == [channels, 2, 2] != recipe_key(avg, dataset, "32-true", "w")["frame_features"]

    # Evaluation from the cache (K = 2 clips, averaged) matches the same model on the decoded videos.
    video_data = data(None)
    video_data.setup("test")
    videos = DataLoader(video_data.datasets["test"], batch_size=4, collate_fn=collate_clips)
    features = DataLoader(split, batch_size=4, collate_fn=collate_clips)
    with torch.no_grad():
        for feature_batch, video_batch in zip(features, videos, strict=True):
            assert feature_batch["features"].shape[2:] == (STEPS, channels, 2, 2)
            cached = attention.network.batch_logits(feature_batch)
            direct = attention.network.batch_logits(video_batch)
            torch.testing.assert_close(cached, direct, atol=2e-2, rtol=2e-2)

    # fit and test through the data module, served from the cache: the attention trains, the backbone does not.
    before = {name: p.clone() for name, p in attention.network.named_parameters()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(attention.train(), datamodule=cached_data)
        (metrics,) = trainer.test(attention, datamodule=cached_data, verbose=False)
    assert 0.0 <= metrics["test_acc"] <= 1.0
    after = dict(attention.network.named_parameters())
    assert not torch.equal(before["spatial.attention.weight"], after["spatial.attention.weight"])
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("backbone."))
