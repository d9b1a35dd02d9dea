"""The motion crop: its box on known motion, its fallbacks, and the same box on every path that reads a clip."""

from pathlib import Path

import numpy as np
import pytest
import torch

from video_cnn_rnn.data import motion
from video_cnn_rnn.data.crops import to_clip
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.decode import decode_frames, iter_windows, load_clip, load_clips
from video_cnn_rnn.data.motion import MotionBox, centre_square, motion_box
from video_cnn_rnn.data.sampling import sample_indices
from video_cnn_rnn.data.synthetic import write_video

WIDTH, HEIGHT = 192, 96  # a wide frame: the subject is a small part of it


def _scene(num_frames: int, subject_at: tuple[int, int] | None, seed: int = 0, pan: bool = False) -> np.ndarray:
    """A still textured background; a 16 px square swinging left and right around ``subject_at`` (row, col)
    when given; with ``pan`` the whole picture slides sideways, as under a moving camera."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(40, 200, (HEIGHT // 8 + 1, WIDTH // 8 + 2, 3), dtype=np.uint8)
    background = blocks.repeat(8, 0).repeat(8, 1)
    frames = []
    for i in range(num_frames):
        frame = (
            np.roll(background, 3 * i, axis=1)[:HEIGHT, :WIDTH].copy() if pan else background[:HEIGHT, :WIDTH].copy()
        )
        if subject_at is not None:
            row, col = subject_at
            col += int(10 * np.sin(i))  # [-10, 10] px around its place
            frame[row - 8 : row + 8, col - 8 : col + 8] = 255 if i % 2 else 0
        frames.append(frame)
    return np.stack(frames)


def _contains(box: MotionBox, row: int, col: int) -> bool:
    return box.top <= row < box.top + box.side and box.left <= col < box.left + box.side


def test_the_box_surrounds_the_motion_and_is_smaller_than_the_frame() -> None:
    box = motion_box(_scene(8, subject_at=(70, 150)))
    assert box.fallback == ""
    assert _contains(box, 70, 150)
    assert box.side < HEIGHT * motion.WHOLE_FRAME
    assert box.side >= HEIGHT // motion.MOTION_ZOOM
    assert 0 <= box.top <= HEIGHT - box.side and 0 <= box.left <= WIDTH - box.side


def test_a_box_at_the_frame_edge_stays_inside_it() -> None:
    box = motion_box(_scene(8, subject_at=(10, 182)))
    assert box.fallback == ""
    assert box.top == 0 and box.left + box.side == WIDTH


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (_scene(8, subject_at=None), motion.NO_MOTION),
        (_scene(8, subject_at=None, pan=True), motion.EVERYWHERE),
        (_scene(1, subject_at=(50, 100)), motion.TOO_SHORT),
        (np.zeros((4, 8, 12, 3), dtype=np.uint8), motion.TOO_SMALL),
    ],
    ids=["still", "moving-camera", "one-frame", "tiny"],
)
def test_fallbacks_take_the_centre_square_and_say_why(frames: np.ndarray, reason: str) -> None:
    box = motion_box(frames)
    assert box == centre_square(*frames.shape[1:3], reason)
    assert torch.equal(to_clip(frames, 16, "motion"), to_clip(frames, 16, "centre"))


def test_to_clip_crops_the_box_and_resizes_it() -> None:
    frames = _scene(8, subject_at=(70, 150))
    boxes: list[MotionBox] = []
    clip = to_clip(frames, 24, "motion", boxes)
    (box,) = boxes
    assert clip.shape == (8, 3, 24, 24) and clip.dtype == torch.uint8
    from torchvision.transforms.v2.functional import resize

    square = torch.from_numpy(frames[:, box.top : box.top + box.side, box.left : box.left + box.side].copy())
    expected = resize(square.permute(0, 3, 1, 2), [24, 24], antialias=True)
    assert torch.equal(clip, expected)


@pytest.fixture(scope="module")
def small_subject_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("motion") / "small_subject.mp4"
    write_video(path, _scene(30, subject_at=(70, 150)), fps=10, x264_options={"g": "60"})
    return path


def test_load_clip_decodes_larger_frames_and_crops_the_motion(small_subject_video: Path) -> None:
    boxes: list[MotionBox] = []
    clip, length = load_clip(small_subject_video, 8, 32, crop="motion", boxes=boxes, backend="pyav")
    (box,) = boxes
    assert clip.shape == (8, 3, 32, 32) and length == 8
    assert box.fallback == "" and _contains(box, 70, 150)  # frames decoded at 96 = 3 x 32 rows: the stored size
    frames = decode_frames(small_subject_video, lambda count, fps: sample_indices(count, 8, "uniform"), backend="pyav")
    assert torch.equal(clip, to_clip(frames, 32, "motion"))  # the same box on the frames as stored


def test_each_of_k_clips_finds_its_own_box(small_subject_video: Path) -> None:
    boxes: list[MotionBox] = []
    clips, length = load_clips(small_subject_video, 3, num_frames=4, img_size=32, crop="motion", boxes=boxes)
    assert clips.shape == (3, 4, 3, 32, 32) and len(boxes) == 3
    assert all(_contains(box, 70, 150) for box in boxes)


def test_a_window_over_the_whole_video_is_the_clip(small_subject_video: Path) -> None:
    (window,) = iter_windows(small_subject_video, 3.0, 3.0, num_frames=8, img_size=32, crop="motion")
    clip, _ = load_clip(small_subject_video, num_frames=8, img_size=32, crop="motion", backend="pyav")
    assert torch.equal(window.frames, clip)


def test_the_dataset_marks_a_fallback_and_keys_the_motion_settings(small_subject_video: Path, tmp_path: Path) -> None:
    still = tmp_path / "still.mp4"
    write_video(still, _scene(20, subject_at=None), fps=10)
    dataset = VideoDataset([(str(small_subject_video), 0), (str(still), 1)], num_frames=4, img_size=32, crop="motion")
    assert "crop_fallback" not in dataset[0]
    assert motion.NO_MOTION in dataset[1]["crop_fallback"]
    assert dataset.motion == motion.SETTINGS  # a public attribute: part of a feature store entry's key
    assert not hasattr(VideoDataset([], crop="centre"), "motion")


def test_flicker_over_a_still_frame_does_not_widen_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _scene(8, subject_at=(70, 150))
    rng = np.random.default_rng(1)
    for frame in frames:  # compression-like flicker: a tenth of the 8 px blocks a few grey levels off, anywhere
        for row, col in rng.integers(0, (HEIGHT // 8, WIDTH // 8), (30, 2)):
            frame[8 * row : 8 * row + 8, 8 * col : 8 * col + 8] += 6
    box = motion_box(frames)
    assert box.fallback == "" and _contains(box, 70, 150) and box.side < HEIGHT // 2
    monkeypatch.setattr(motion, "MOVING_SHARE", 0.0)  # every bit of energy counted: the flicker pulls the box apart
    assert motion_box(frames).side > box.side


def test_motion_in_two_places_takes_the_whole_short_side_over_it() -> None:
    frames = _scene(8, subject_at=(20, 110))
    frames[:, 60:76, 172:188] = _scene(8, subject_at=(68, 180))[:, 60:76, 172:188]  # a second subject, far off
    box = motion_box(frames)
    assert box.fallback == motion.SPREAD and box.side == HEIGHT
    assert box.left > centre_square(HEIGHT, WIDTH).left  # slid right, towards both subjects, not the centre square
