"""Bad input on the command line (issue 26): one line naming the file and what to do, exit code 2 or 1, no
traceback; ``VIDEO_CNN_RNN_TRACEBACK=1`` brings it back, and a bug keeps its traceback."""

from pathlib import Path

import pytest
import torch

from video_cnn_rnn.cli import main
from video_cnn_rnn.data.decode import DamagedVideoError, VideoDecodeError
from video_cnn_rnn.errors import CheckpointError, load_checkpoint, user_error


def _exit(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    return stopped.value.code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("video-cnn-rnn: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def truncated_checkpoint(tmp_path: Path) -> Path:
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return truncated


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_an_unreadable_checkpoint_is_one_line_naming_it_and_its_size(
    damage: str, truncated_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    """Issue 26, row 4: a 30-line torch.load traceback for a truncated file, a bare EOFError for 0 bytes."""
    from test_cli import tiny_args

    checkpoint = truncated_checkpoint
    if damage == "empty":
        checkpoint = tmp_path / "empty.ckpt"
        checkpoint.write_bytes(b"")
    code, err = _exit(["test", *tiny_args(synthetic_root, tmp_path), "--ckpt_path", str(checkpoint)], capsys)
    line = _one_error_line(err)
    size = "0 bytes" if damage == "empty" else f"{checkpoint.stat().st_size:,} bytes"
    assert code == 1 and str(checkpoint) in line and size in line and "--ckpt_path" in line


def test_load_checkpoint_refuses_what_is_not_a_lightning_checkpoint(tmp_path: Path) -> None:
    other = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"weights.pth .*not a Lightning checkpoint"):
        load_checkpoint(other)


def test_a_text_file_to_predict_in_a_worker_is_one_line(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    """Issue 26, row 5: 145 lines and three chained tracebacks from the DataLoader worker."""
    from test_cli import tiny_args

    fake = tmp_path / "bad" / "fake.mp4"
    fake.parent.mkdir()
    fake.write_text("this is a text file, not a video\n")
    args = ["predict", *tiny_args(synthetic_root, tmp_path), "--data.predict", str(fake), "--data.num_workers", "1"]
    code, err = _exit(args, capsys)
    line = _one_error_line(err)
    assert code == 1 and f"error: {fake}: cannot decode" in line and "--data.on_error skip" in line
    assert "DataLoader worker" not in err


def test_worker_errors_are_unwrapped_to_the_workers_message() -> None:
    from torch._utils import ExceptionWrapper

    for error in (VideoDecodeError("a.mp4: cannot decode"), DamagedVideoError("a.mp4: damage at frame 3", [])):
        try:
            raise error
        except VideoDecodeError:
            wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
        with pytest.raises(VideoDecodeError) as reraised:
            wrapper.reraise()
        assert "DataLoader worker" in str(reraised.value)
        assert user_error(reraised.value) == (
            1,
            f"{error} (to leave such videos out and go on, pass --data.on_error skip)",
        )


def test_the_traceback_comes_back_on_request_and_a_bug_keeps_it(
    monkeypatch: pytest.MonkeyPatch, synthetic_root: Path, tmp_path: Path
) -> None:
    from test_cli import tiny_args

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    monkeypatch.setenv("VIDEO_CNN_RNN_TRACEBACK", "1")
    with pytest.raises(CheckpointError, match="0 bytes"):
        main(["test", *tiny_args(synthetic_root, tmp_path), "--ckpt_path", str(empty)])
    monkeypatch.delenv("VIDEO_CNN_RNN_TRACEBACK")
    monkeypatch.setattr("video_cnn_rnn.cli.synthetic_main", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["synthetic", str(tmp_path / "data")])


def test_a_checkpoint_with_flipped_tensor_bytes_is_refused_not_loaded_wrong(tmp_path: Path) -> None:
    """torch.load does not check the zip's CRCs: a flipped byte in a tensor would load as a different weight."""
    import zipfile

    path = tmp_path / "flipped.ckpt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "hyper_parameters": {}}, path)
    with zipfile.ZipFile(path) as archive:
        info = next(member for member in archive.infolist() if member.filename.endswith("data/0"))
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF  # inside the tensor's bytes (local header + name < 200 bytes)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped.ckpt \([\d,]+ bytes\): member .*data/0 fails its CRC check"):
        load_checkpoint(path)
