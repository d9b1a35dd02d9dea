"""``video-cnn-rnn proxy``: builds the proxies of folders and CSVs ahead of training with progress lines and a count,
reuses them on a second run, names what it reads as is, and stops with a usage error on bad options."""

from pathlib import Path

import numpy as np
import pytest

from video_cnn_rnn.cli import main
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.proxies import ProxySettings
from video_cnn_rnn.data.synthetic import make_clip, write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clips/``: three 80 x 64 videos, one 24 x 16 (smaller than a proxy) and ``clips.csv`` naming two of them."""
    folder = tmp_path_factory.mktemp("proxy_command")
    rng = np.random.default_rng(3)
    (folder / "clips").mkdir()
    for index, (width, height) in enumerate([(80, 64), (80, 64), (80, 64), (24, 16)]):
        write_video(folder / "clips" / f"clip_{index}.mp4", make_clip("disc_grow", 10, width, height, rng))
    (folder / "clips.csv").write_text("video_name,tag\nclips/clip_0.mp4,a\nclips/clip_1.mp4,b\n")
    return folder


def test_the_command_builds_then_reuses_with_progress(videos: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "proxies"
    args = ["proxy", str(videos / "clips"), str(videos / "clips.csv"), "--proxy_cache", str(cache)]
    args += ["--img_size", "16", "--crop", "pad", "--every", "2"]
    main([*args, "--jobs", "2"])
    out = capsys.readouterr().out
    assert "proxy: 4 videos, short side 20 px" in out  # the CSV's videos are the folder's: counted once
    assert "proxy: 2/4 videos" in out and "proxy: 4/4 videos" in out
    assert "clip_3.mp4: read as is: its short side (16 px) is no larger than a proxy's" in out
    assert f"proxies in {cache}: built 3, reused 0, read as is 1, failed 0 of 4 videos" in out
    assert len(list(cache.glob("*.mp4"))) == 3
    main(args)
    assert "built 0, reused 3, read as is 1, failed 0 of 4 videos" in capsys.readouterr().out
    # What the command built is what training reads: the dataset finds the proxies and builds none.
    dataset = VideoDataset([(str(videos / "clips" / "clip_0.mp4"), 0)], 4, 16, crop="pad", proxy_cache=str(cache))
    assert dataset.proxy == ProxySettings.for_recipe(16, "pad").key()
    dataset[0]
    assert len(list(cache.glob("*.mp4"))) == 3


def test_a_folder_that_cannot_be_written_fails_the_command(videos: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.warns(UserWarning, match="cannot be written"), pytest.raises(SystemExit) as exit_:
        main(
            ["proxy", str(videos / "clips"), "--proxy_cache", str(tmp_path / "a_file" / "proxies"), "--img_size", "16"]
        )
    assert exit_.value.code == 1 and "failed 4 of 4 videos" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--crop", "middle"], ["--jobs", "0"]])
def test_bad_options_are_usage_errors(bad: list[str], videos: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["proxy", str(videos / "clips"), "--proxy_cache", str(tmp_path), *bad])
    assert exit_.value.code == 2 and bad[0] in capsys.readouterr().err
