"""``video-cnn-rnn serve``: the request handling through FastAPI's test client (fast), and the page in a real
headless Chromium driven through the Debian ``chromedriver`` (5-10 s): upload, wait, read the label, keep a screenshot,
and the refusals of a text file, an empty file and a 2-hour video.

The timeline of long videos is the real one (``predict_timeline``, ``timeline.write_timeline``).
"""

from __future__ import annotations

import fractions
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from video_cnn_rnn import serve
from video_cnn_rnn.cli import main
from video_cnn_rnn.data.synthetic import CLASSES
from video_cnn_rnn.models.classifier import VideoClassifier

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "runs" / "test_artifacts"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model as a portable folder: test_efficientnet, 32 px, 4 frames, the synthetic classes."""
    import torch

    torch.manual_seed(0)
    model = VideoClassifier(
        backbone="test_efficientnet", class_names=list(CLASSES), num_frames=4, img_size=32, pretrained=False
    )
    return model.save_pretrained(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture()
def model(model_folder: Path) -> VideoClassifier:
    return serve.load_model(model_folder, device="cpu")


@pytest.fixture(scope="module")
def two_hour_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.6 kB H.264 file of three 16x16 frames whose timestamps span 2 hours."""
    import av

    path = tmp_path_factory.mktemp("long") / "two_hours.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1)
        for pts in (0, 3600, 7199):  # the last frame lasts 1 s: 7200 s in all
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, fractions.Fraction(1, 1)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def client_for(model: VideoClassifier, **settings: Any) -> TestClient:
    return TestClient(serve.create_app(model, serve.ServeSettings(**settings)))


def post(client: TestClient, path: Path, name: str | None = None) -> Any:
    return client.post(f"/api/predict?filename={name or path.name}", content=path.read_bytes())


def test_a_checkpoint_or_a_folder(model: VideoClassifier, video_dir: dict[str, Path], tmp_path: Path) -> None:
    import lightning
    import torch

    checkpoint = tmp_path / "best.ckpt"
    hparams = dict(model.hparams)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": lightning.__version__,
        },
        checkpoint,
    )
    loaded = serve.load_model(checkpoint, device="cpu")
    assert not loaded.training and loaded.class_names == model.class_names
    assert loaded.predict_video(str(video_dir["mp4"])) == model.predict_video(str(video_dir["mp4"]))


def test_page_and_info(model: VideoClassifier) -> None:
    client = client_for(model, max_upload_mb=5)
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    info = client.get("/api/info").json()
    assert info["classes"] == list(CLASSES) and info["max_upload_mb"] == 5 and info["examples"] == []


def test_upload_gives_top_k_and_frames(model: VideoClassifier, video_dir: dict[str, Path]) -> None:
    expected = model.predict_video(str(video_dir["mp4"]), top_k=3)
    response = post(client_for(model, top_k=3), video_dir["mp4"])
    assert response.status_code == 200, response.text
    data = response.json()
    assert [(row["label"], pytest.approx(row["prob"])) for row in data["top_k"]] == expected
    assert data["file"] == "mp4.mp4" and data["sampled_frames"] == 4 and data["duration_s"] == pytest.approx(1.2)
    assert data["frames_gif"].startswith("data:image/gif;base64,")
    assert data["timeline_png"] is None  # 1.2 s: no timeline


def test_the_frames_shown_are_cut_as_the_model_was_trained(
    model_folder: Path, video_dir: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = VideoClassifier.from_pretrained(model_folder, crop="pad")
    crops: list[str] = []
    real = serve.load_clip

    def spy(*args: Any, **kwargs: Any) -> Any:
        crops.append(kwargs["crop"])
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "load_clip", spy)
    client = client_for(model)
    assert post(client, video_dir["mp4"]).status_code == 200 and crops == ["pad"]
    assert client.get("/api/info").json()["crop"] == "pad"


def test_long_video_gets_the_timeline(
    model: VideoClassifier, video_dir: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real = model.predict_timeline
    monkeypatch.setattr(
        model, "predict_timeline", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs)
    )
    data = post(client_for(model, top_k=5), video_dir["long_mp4"]).json()  # 300 frames at 25 fps: 12 s
    assert data["timeline_png"].startswith("data:image/png;base64,")
    assert len(calls) == 1 and calls[0]["window_s"] == 2.0 and calls[0]["hop_s"] == 1.0
    short = post(client_for(model), video_dir["mp4"]).json()
    assert short["timeline_png"] is None and len(calls) == 1


def test_a_failing_timeline_leaves_the_answer_and_says_so(
    model: VideoClassifier, video_dir: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no windows")

    monkeypatch.setattr(model, "predict_timeline", broken)
    data = post(client_for(model), video_dir["long_mp4"]).json()
    assert data["top_k"] and data["timeline_png"] is None and "timeline could not be drawn" in data["note"]


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("text", 415, "is not a video"),
        ("zero", 400, "is empty (0 bytes)"),
        ("truncated_mp4", 415, "is not a video"),
    ],
)
def test_bad_uploads_get_a_readable_message(
    model: VideoClassifier, video_dir: dict[str, Path], name: str, status: int, words: str
) -> None:
    response = post(client_for(model), video_dir[name])
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert words in message and video_dir[name].name in message
    assert "Traceback" not in message and "/tmp" not in message


def test_two_hour_video_is_refused_before_decoding(
    model: VideoClassifier, two_hour_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded a video that is over the duration limit")

    monkeypatch.setattr(model, "predict_video", no_decoding)
    monkeypatch.setattr(serve, "load_clip", no_decoding)
    response = post(client_for(model), two_hour_video)
    assert response.status_code == 413
    assert response.json()["error"] == (
        "two_hours.mp4 is 2:00:00 long; this demo takes videos up to 30:00 (--max_duration_s)."
    )


def test_upload_over_the_size_limit(model: VideoClassifier, video_dir: dict[str, Path]) -> None:
    response = post(client_for(model, max_upload_mb=0.001), video_dir["long_mp4"])
    assert response.status_code == 413 and "(--max_upload_mb)" in response.json()["error"]


def test_decode_errors_and_failures_are_one_readable_line(
    model: VideoClassifier, video_dir: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from video_cnn_rnn.data.decode import VideoDecodeError

    def undecodable(path: str, top_k: int = 5) -> None:
        raise VideoDecodeError(f"{path}: no frame could be decoded")

    monkeypatch.setattr(model, "predict_video", undecodable)
    response = post(client_for(model), video_dir["mp4"])
    assert response.status_code == 422
    assert response.json()["error"] == "mp4.mp4 could not be decoded: mp4.mp4: no frame could be decoded"

    monkeypatch.setattr(model, "predict_video", lambda *a, **k: 1 / 0)
    response = post(client_for(model), video_dir["mp4"])
    assert response.status_code == 500
    assert response.json()["error"].startswith("Something went wrong analysing mp4.mp4: ZeroDivisionError")


def test_examples(model: VideoClassifier, tmp_path: Path) -> None:
    examples = serve.example_videos(None, model.class_names, tmp_path)
    assert sorted(examples) == sorted(f"{label}.mp4" for label in CLASSES)
    client = client_for(model, examples=examples)
    assert client.get("/api/info").json()["examples"] == sorted(examples)
    data = client.post("/api/examples/fade_in.mp4").json()
    assert data["file"] == "fade_in.mp4" and data["top_k"][0]["label"] in CLASSES
    assert client.post("/api/examples/nope.mp4").status_code == 404
    assert serve.example_videos(None, ["cat", "dog"], tmp_path) == {}  # no synthetic examples for other classes
    assert serve.example_videos(tmp_path, [], tmp_path / "unused") == {  # a folder: its videos
        name: tmp_path / name for name in sorted(examples)
    }


def test_cli_without_the_extra_names_it(
    model_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--ckpt_path", str(model_folder)])
    assert "pip install 'video_cnn_rnn[serve]'" in str(raised.value)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        serve.load_model(model_folder / "missing.ckpt")


# The browser test.


def _browser() -> Any:
    """A headless Chromium through the system chromedriver; skips with the reason when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium / chromedriver (the Debian packages chromium, chromium-driver; .ci/install adds them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(argument)
    options.add_argument("--window-size=1100,900")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def server_url(model: VideoClassifier, monkeypatch: pytest.MonkeyPatch) -> Any:
    import uvicorn

    port = _free_port()
    app = serve.create_app(model, serve.ServeSettings(top_k=5))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def test_in_a_real_browser(
    server_url: str, model: VideoClassifier, video_dir: dict[str, Path], two_hour_video: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.monotonic()
    expected = model.predict_video(str(video_dir["long_mp4"]), top_k=1)[0][0]
    browser = _browser()
    try:
        browser.get(server_url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")

        def upload(path: Path) -> str:
            """Upload ``path``; -> "result" or "error", whichever the page shows."""
            browser.execute_script("for (const id of ['result', 'error']) document.getElementById(id).hidden = true;")
            browser.find_element(By.ID, "file").send_keys(str(path))
            return wait.until(
                lambda b: (
                    "result"
                    if b.find_element(By.ID, "result").is_displayed()
                    else "error"
                    if b.find_element(By.ID, "error").is_displayed()
                    else False
                )
            )

        # A 12 s video: the top-k bars, the sampled frames' animation and the timeline.
        assert upload(video_dir["long_mp4"]) == "result"
        assert browser.find_element(By.ID, "top-label").text == expected
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 5
        assert browser.find_element(By.ID, "frames").get_attribute("naturalWidth") == "128"  # 32 px x4
        assert browser.find_element(By.ID, "timeline").is_displayed()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "serve.png"
        browser.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")

        for path, words in (
            (video_dir["text"], "text.mp4 is not a video this demo can read"),
            (video_dir["zero"], "zero.mp4 is empty (0 bytes)"),
            (two_hour_video, "two_hours.mp4 is 2:00:00 long; this demo takes videos up to 30:00"),
        ):
            assert upload(path) == "error", path
            message = browser.find_element(By.ID, "error").text
            assert words in message, message
            assert "Traceback" not in browser.page_source
        browser.save_screenshot(str(ARTIFACTS / "serve_refused.png"))
    finally:
        browser.quit()
    print(f"browser test: {time.monotonic() - start:.1f} s")


@pytest.mark.slow
def test_a_stopped_server_removes_its_folders_and_an_aborted_upload_is_one_line(
    model_folder: Path, tmp_path: Path
) -> None:
    """Issue 26: SIGTERM (what systemd, Docker and Kubernetes send) left the examples folder behind; an aborted
    upload logged a ClientDisconnect traceback. (SIGINT ends through KeyboardInterrupt, the same way out.)"""
    import os
    import signal
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = _free_port()
    command = [sys.executable, "-m", "video_cnn_rnn", "serve", "--ckpt_path", str(model_folder), "--port", str(port)]
    env = {**os.environ, "TMPDIR": str(scratch)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "open http" in server.stdout.readline()
        assert any(path.name.startswith("video_cnn_rnn_examples_") for path in scratch.iterdir())
        for _ in range(100):  # the port opens just after the line is printed
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    head = "POST /api/predict?filename=clip.mp4 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                    client.sendall(head.encode() + bytes(1000))
                    time.sleep(0.5)
                    break
            time.sleep(0.1)
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "Traceback" not in err and err.count("upload of clip.mp4 aborted by the client") == 1, err
    assert list(scratch.iterdir()) == []
