"""Frame samplers: pure index maths."""

import random

import pytest

from video_cnn_rnn.data.sampling import SAMPLING_MODES, sample_indices, segment_indices, stride_indices


@pytest.mark.parametrize(
    ("mode", "num_video_frames", "num_frames", "kwargs", "expected"),
    [
        ("first", 100, 5, {}, [0, 1, 2, 3, 4]),
        ("first", 3, 5, {}, [0, 1, 2]),
        ("first", 10, 1, {}, [0]),
        ("uniform", 10, 4, {}, [0, 3, 6, 9]),
        ("uniform", 100, 5, {}, [0, 25, 50, 74, 99]),
        ("uniform", 5, 5, {}, [0, 1, 2, 3, 4]),
        ("uniform", 3, 8, {}, [0, 1, 2]),
        ("uniform", 11, 1, {}, [5]),
        ("uniform", 1, 1, {}, [0]),
        ("segment", 12, 4, {}, [1, 4, 7, 10]),  # eval: centre of [0-2] [3-5] [6-8] [9-11]
        ("segment", 10, 3, {}, [1, 5, 8]),  # segments [0-3] [4-6] [7-9]
        ("segment", 3, 8, {}, [0, 1, 2]),
        ("segment", 9, 1, {}, [4]),
        ("segment", 12, 4, {"offset": 0.0}, [0, 3, 6, 9]),
        ("segment", 12, 4, {"offset": 0.5}, [1, 4, 7, 10]),
        ("segment", 12, 4, {"offset": 0.99}, [2, 5, 8, 11]),
        ("stride", 20, 4, {"stride": 3}, [0, 3, 6, 9]),
        ("stride", 7, 10, {"stride": 3}, [0, 3, 6]),
        ("stride", 20, 3, {}, [0, 1, 2]),
        ("stride", 100, 4, {"video_fps": 25.0, "target_fps": 5.0}, [0, 5, 10, 15]),
        ("stride", 100, 4, {"video_fps": 29.97, "target_fps": 5.0}, [0, 5, 10, 15]),  # int(5.994) = 5
        ("stride", 100, 3, {"video_fps": 30.0, "target_fps": 4.0}, [0, 7, 14]),  # int(7.5) = 7
        ("stride", 100, 3, {"video_fps": 10.0, "target_fps": 25.0}, [0, 1, 2]),  # never below 1
        ("stride", 100, 3, {"stride": 9, "video_fps": 25.0, "target_fps": 12.5}, [0, 2, 4]),  # fps wins
    ],
)
def test_indices(mode, num_video_frames, num_frames, kwargs, expected):
    assert sample_indices(num_video_frames, num_frames, mode, **kwargs) == expected


@pytest.mark.parametrize("mode", SAMPLING_MODES)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    ("num_video_frames", "num_frames"), [(1, 1), (1, 8), (7, 8), (8, 8), (9, 8), (250, 20), (37, 1)]
)
def test_contract(mode, training, num_video_frames, num_frames):
    """Sorted, unique, in range, never more than asked; a short video keeps all its frames."""
    indices = sample_indices(num_video_frames, num_frames, mode, random_sampling=training, rng=random.Random(0))
    assert indices == sorted(set(indices))
    assert all(0 <= i < num_video_frames for i in indices)
    assert 1 <= len(indices) <= num_frames
    if num_video_frames <= num_frames:
        assert indices == list(range(num_video_frames))
    elif mode != "stride":
        assert len(indices) == num_frames


def test_segment_training_random_within_segments():
    num_video_frames, num_frames = 100, 8
    bounds = [(0, 12), (13, 24), (25, 37), (38, 49), (50, 62), (63, 74), (75, 87), (88, 99)]
    rng = random.Random(1)
    seen = [set() for _ in range(num_frames)]
    for _ in range(300):
        indices = sample_indices(num_video_frames, num_frames, "segment", random_sampling=True, rng=rng)
        for i, (index, (low, high)) in enumerate(zip(indices, bounds, strict=True)):
            assert low <= index <= high
            seen[i].add(index)
    # Every position within each segment gets drawn: the choice is random over the whole segment.
    assert [len(s) for s in seen] == [high - low + 1 for low, high in bounds]


def test_segment_training_seeded_and_eval_deterministic():
    draw = lambda seed: sample_indices(60, 6, "segment", random_sampling=True, rng=random.Random(seed))  # noqa: E731
    assert draw(3) == draw(3)
    assert len({tuple(draw(seed)) for seed in range(20)}) > 1
    evals = {tuple(sample_indices(60, 6, "segment", random_sampling=False, rng=random.Random(s))) for s in range(5)}
    assert evals == {(4, 14, 24, 34, 44, 54)}  # (start + end) // 2 of [0-9] [10-19] ...


def test_segment_offsets_for_multi_clip():
    """K clips with offsets (k + 0.5) / K take different, evenly spread frames of every segment."""
    k = 3
    clips = [segment_indices(90, 3, random_sampling=False, offset=(i + 0.5) / k) for i in range(k)]
    assert clips == [[5, 35, 65], [15, 45, 75], [25, 55, 85]]
    # An offset overrides training randomness.
    assert segment_indices(90, 3, random_sampling=True, rng=random.Random(0), offset=0.0) == [0, 30, 60]


def test_stride_target_fps_matches_tutorial_seed():
    """The tutorial seed: frame_interval = max(int(fps / frame_rate), 1); keep every interval-th frame."""
    for fps in (23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0):
        for frame_rate in (1, 2, 5, 7.5, 10):
            interval = max(int(fps / frame_rate), 1)
            expected = [i for i in range(300) if i % interval == 0][:10]
            assert stride_indices(300, 10, video_fps=fps, target_fps=frame_rate) == expected


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0, 5), {}, "at least one frame"),
        ((-3, 5), {}, "at least one frame"),
        ((10, 0), {}, "num_frames must be >= 1"),
        ((10, -1), {}, "num_frames must be >= 1"),
        ((10, 5, "random"), {}, "unknown sampling mode"),
        ((10, 5, "stride"), {"stride": 0}, "stride must be >= 1"),
        ((10, 5, "stride"), {"stride": -2}, "stride must be >= 1"),
        ((10, 5, "stride"), {"target_fps": 5.0}, "frame rate"),
        ((10, 5, "stride"), {"target_fps": 5.0, "video_fps": 0.0}, "frame rate"),
        # A non-positive target rate is a configuration error; it must not surface as ZeroDivisionError.
        ((10, 5, "stride"), {"target_fps": 0.0, "video_fps": 25.0}, "target_fps"),
        ((10, 5, "stride"), {"target_fps": -5.0, "video_fps": 25.0}, "target_fps"),
    ],
)
def test_invalid_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_indices(*args, **kwargs)
