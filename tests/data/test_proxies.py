"""Proxies for HD footage: one upright, small, short-GOP file per source and settings, written atomically, rebuilt
when damaged or when its source changes, and the originals (with one warning) where the folder cannot be written;
the dataset decodes the same frames through them, up to the re-encoding's small differences."""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest
import torch

from video_cnn_rnn.data import proxies
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.decode import DamagedVideoError, load_clip
from video_cnn_rnn.data.feature_cache import frame_settings
from video_cnn_rnn.data.proxies import ProxySettings, ProxyStore, proxy_checks_out, proxy_name
from video_cnn_rnn.data.synthetic import make_clip, write_video

if TYPE_CHECKING:
    from conftest import AddDisplayRotation

SETTINGS = ProxySettings(short_side=40)  # sources below are 96 x 64: a proxy is 60 x 40


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, add_display_rotation: AddDisplayRotation) -> dict[str, Path]:
    """``plain``: 96 x 64, 36 frames at 25 fps, a keyframe every 30 (a long GOP for its length); ``rotated``: the
    same stream shown turned 90 degrees (upright 64 x 96); ``small``: 48 x 32, smaller than any proxy here."""
    folder = tmp_path_factory.mktemp("proxy_sources")
    rng = np.random.default_rng(5)
    plain = folder / "plain.mp4"
    write_video(plain, make_clip("disc_grow", 36, 96, 64, rng), x264_options={"g": "30"})
    small = folder / "small.mp4"
    write_video(small, make_clip("fade_in", 12, 48, 32, rng))
    rotated = add_display_rotation(plain, folder / "rotated.mp4", 90)
    return {"plain": plain, "rotated": rotated, "small": small}


def copy_of(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(source, folder / source.name))


def stream_facts(path: Path | str) -> tuple[int, float, int, int, list[bool], bool]:
    """(frames, average rate, width, height, keyframe flags, any display matrix) of a file's video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = [packet.is_keyframe for packet in container.demux(stream) if packet.size > 0]
        rotated = any("DISPLAYMATRIX" in frame.side_data for frame in container.decode(video=0))
        return stream.frames, float(stream.average_rate), stream.width, stream.height, keys, rotated


def test_a_proxy_keeps_every_frame_upright_small_and_short_gop(sources: dict[str, Path], tmp_path: Path) -> None:
    store = ProxyStore(tmp_path, SETTINGS)
    for name, (width, height) in {"plain": (60, 40), "rotated": (40, 60)}.items():
        outcome = store.prepare(str(sources[name]))
        assert outcome.status == "built" and Path(outcome.source).parent == tmp_path
        frames, rate, proxy_width, proxy_height, keys, rotated = stream_facts(outcome.source)
        source_frames, source_rate, *_ = stream_facts(sources[name])
        assert (frames, rate) == (source_frames, source_rate) == (36, 25.0)
        assert (proxy_width, proxy_height) == (width, height) and not rotated  # upright, no matrix left to apply
        assert [i for i, key in enumerate(keys) if key] == list(range(0, 36, SETTINGS.gop))
        # The same frames as the original's, upright, up to the re-encoding.
        original, _ = load_clip(str(sources[name]), 36, 32, "uniform", crop="pad")
        proxied, _ = load_clip(outcome.source, 36, 32, "uniform", crop="pad")
        assert (original.float() - proxied.float()).abs().mean() < 4
    assert store.prepare(str(sources["plain"])).status == "reused"
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_the_name_is_the_source_identity_and_the_settings(sources: dict[str, Path], tmp_path: Path) -> None:
    source = copy_of(sources["plain"], tmp_path / "a")
    name = proxy_name(str(source), SETTINGS)
    assert proxy_name(str(source), SETTINGS) == name
    assert proxy_name(str(copy_of(sources["plain"], tmp_path / "b")), SETTINGS) != name  # another path
    for other in (ProxySettings(42), ProxySettings(40, gop=16), ProxySettings(40, crf=23)):
        assert proxy_name(str(source), other) != name
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 1))
    assert proxy_name(str(source), SETTINGS) != name  # touched: a new video as far as proxies know


def test_a_changed_source_is_proxied_again(sources: dict[str, Path], tmp_path: Path) -> None:
    source = copy_of(sources["plain"], tmp_path / "videos")
    store = ProxyStore(tmp_path / "proxies", SETTINGS)
    first = store.source_for(str(source))
    write_video(source, make_clip("fade_out", 20, 96, 64, np.random.default_rng(9)))  # edited in place
    second = store.source_for(str(source))
    assert second != first and stream_facts(second)[0] == 20


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong frame count", "foreign"])
def test_a_damaged_proxy_is_rebuilt_never_read(damage: str, sources: dict[str, Path], tmp_path: Path) -> None:
    store = ProxyStore(tmp_path, SETTINGS)
    file = Path(store.prepare(str(sources["plain"])).source)
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    elif damage == "garbage":
        file.write_bytes(os.urandom(4096))
    elif damage == "wrong frame count":  # a valid video under the proxy's name, its comment copied, fewer frames
        with av.open(str(file)) as container:
            comment = container.metadata["comment"]
        with av.open(str(file), "w", format="mp4") as container:
            container.metadata["comment"] = comment
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 60, 40, "yuv420p"
            for frame in make_clip("fade_in", 10, 60, 40, np.random.default_rng(0)):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    else:  # another source's proxy copied under this name
        other = ProxyStore(tmp_path / "other", SETTINGS).prepare(str(sources["rotated"])).source
        shutil.copy(other, file)
    assert not proxy_checks_out(file)
    assert ProxyStore(tmp_path, SETTINGS).prepare(str(sources["plain"])).status == "built"
    assert proxy_checks_out(file) and stream_facts(file)[0] == 36


def test_a_proxy_that_fails_to_decode_is_discarded_and_the_original_read(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    dataset = VideoDataset([(str(sources["plain"]), 0)], num_frames=4, img_size=32, proxy_cache=str(tmp_path))
    expected = dataset[0]["frames"]
    (file,) = tmp_path.glob("*.mp4")
    file.write_bytes(os.urandom(file.stat().st_size))  # damaged after this process checked it
    assert torch.equal(dataset[0]["frames"], load_clip(str(sources["plain"]), 4, 32)[0])
    assert not file.exists()  # deleted: the next use builds it again
    assert (dataset[0]["frames"].float() - expected.float()).abs().mean() < 4 and file.exists()


def test_small_and_damaged_sources_are_read_as_is(
    sources: dict[str, Path], codec_videos: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    store = ProxyStore(tmp_path, ProxySettings(32))
    small = store.prepare(str(sources["small"]))
    assert (small.status, small.source) == ("original", str(sources["small"])) and "no larger" in small.reason
    _, damaged = codec_videos["h264"]
    outcome = store.prepare(str(damaged))
    assert outcome.status == "original" and "damaged stream" in outcome.reason
    assert ProxyStore(tmp_path, ProxySettings(32)).prepare(str(damaged)).reason == outcome.reason  # noted, once
    # The original's damage policy applies, as without proxies.
    dataset = VideoDataset([(str(damaged), 0)], num_frames=8, img_size=16, proxy_cache=str(tmp_path))
    with pytest.raises(DamagedVideoError, match=str(damaged)):
        dataset[0]


def unwritable_folder(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if how == "disk full":

        def full(self, width: int, height: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(proxies._ProxyWriter, "_open", full)
        return tmp_path / "proxies"
    if how == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only folders")
        folder = tmp_path / "proxies"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file" / "proxies"  # not a directory: cannot be created


@pytest.mark.parametrize("how", ["disk full", "read-only", "under a file"])
def test_an_unwritable_folder_falls_back_to_the_originals_with_one_warning(
    how: str, sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = unwritable_folder(how, tmp_path, monkeypatch)
    items = [(str(sources["plain"]), 0), (str(sources["rotated"]), 1)]
    dataset = VideoDataset(items, num_frames=4, img_size=32, proxy_cache=str(folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = [dataset[index]["frames"] for index in (0, 1, 0, 1)]
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1 and str(folder) in messages[0], messages
    for (path, _), frames in zip(items * 2, loaded, strict=True):
        assert torch.equal(frames, load_clip(path, 4, 32)[0])  # the originals, exactly
    assert not [file for file in tmp_path.rglob("*.mp4") if file.parent != sources["plain"].parent]


def test_the_dataset_decodes_through_proxies_and_the_feature_key_says_so(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    items = [(str(sources["plain"]), 0), (str(sources["rotated"]), 1)]
    settings = {"num_frames": 8, "img_size": 32, "crop": "pad", "clips_per_video": 2, "sampling": "segment"}
    originals = VideoDataset(items, **settings)
    proxied = VideoDataset(items, proxy_cache=str(tmp_path), **settings)
    assert proxied.proxy == ProxySettings.for_recipe(32, "pad").key() and not hasattr(originals, "proxy")
    assert frame_settings(proxied) != frame_settings(originals)  # features of proxies are stored apart
    assert frame_settings(VideoDataset(items, proxy_cache=str(tmp_path / "elsewhere"), **settings)) == frame_settings(
        proxied
    )  # the folder is not in the key: the settings are
    for index, (path, _) in enumerate(items):
        item, original = proxied[index], originals[index]
        assert item["path"] == path and item["frames"].shape == original["frames"].shape == (2, 8, 3, 32, 32)
        assert (item["frames"].float() - original["frames"].float()).abs().mean() < 4
    assert len(list(tmp_path.glob("*.mp4"))) == 2


def test_a_trained_model_answers_alike_from_originals_and_proxies(sources: dict[str, Path], tmp_path: Path) -> None:
    """A tiny model trained on the originals gives the same top-1 from the proxies, every probability within the
    tolerance measured on real footage (docs/data.md, "Proxies for HD footage"), on the evaluation views the
    fine-tuning recipe uses (2 clips and their mirror images)."""
    from video_cnn_rnn.data.collate import collate_clips
    from video_cnn_rnn.models.classifier import VideoClassifier

    rng = np.random.default_rng(11)
    items = [(str(sources["plain"]), 0), (str(sources["rotated"]), 0)]
    for index, label in enumerate(["fade_out", "red_to_blue", "disc_shrink"]):
        write_video(tmp_path / f"{label}.mp4", make_clip(label, 30, 96, 64, rng))
        items.append((str(tmp_path / f"{label}.mp4"), index % 2))
    views = {"num_frames": 8, "img_size": 32, "crop": "pad", "sampling": "segment", "clips_per_video": 2}
    torch.manual_seed(0)
    model = VideoClassifier(backbone="test_efficientnet", head="mean", fc_hidden=None, dropout=0.0, num_classes=2)
    batch = collate_clips([VideoDataset(items, **views)[i] for i in range(len(items))])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model.network.batch_logits(batch), batch["labels"]).backward()
        optimiser.step()
    model.eval()
    probabilities = []
    for proxy_cache in (None, str(tmp_path / "proxies")):
        dataset = VideoDataset(items, mirrored_views=True, proxy_cache=proxy_cache, **views)
        with torch.no_grad():
            logits = model.network.batch_logits(collate_clips([dataset[i] for i in range(len(items))]))
        probabilities.append(logits.softmax(-1))
    original, proxied = probabilities
    assert original.max(-1).values.min() > 0.6, "the model did not learn: nothing to compare"
    assert torch.equal(original.argmax(-1), proxied.argmax(-1))
    assert (original - proxied).abs().max() <= 0.02  # the tolerance docs/data.md gives, measured on real footage
