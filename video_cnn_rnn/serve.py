"""``video-cnn-rnn serve``: a local browser demo of one model.

video-cnn-rnn serve --ckpt_path runs/demo/checkpoints/best.ckpt   # or a model folder (save_pretrained)

One HTML page (``static/serve.html``, vanilla JS) over a small FastAPI app: upload a video or pick an example, and
see the top-k classes as bars, an animation of the frames the model sampled, and, for videos longer than
``timeline_min_s``, the timeline plot (``predict_timeline``, ``timeline.write_timeline``). Uploads are streamed to a
temporary file under a size limit, and their header is probed for a duration limit before anything is decoded;
every refusal is a JSON ``{"error": message}`` the page shows as it is, never a traceback.

FastAPI and uvicorn come with the ``serve`` extra (``pip install 'video_cnn_rnn[serve]'``); the rest of the
package does not need them.
"""

import argparse
import base64
import contextlib
import logging
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from video_cnn_rnn.data.decode import VideoDecodeError, load_clip
from video_cnn_rnn.data.frame_settings import ClipSpec
from video_cnn_rnn.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from video_cnn_rnn.data.synthetic import make_clip, write_video
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.reports import write_gif
from video_cnn_rnn.timeline import write_timeline

log = logging.getLogger(__name__)

INSTALL_HINT = "video-cnn-rnn serve needs the serve extra: pip install 'video_cnn_rnn[serve]'"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
GIF_MIN_SIZE = 128  # small models' frames are enlarged (nearest) so the caption written on them stays readable


class UploadError(ValueError):
    """A request the demo refuses; ``str(error)`` is the message the page shows, ``status`` the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServeSettings:
    """What ``serve`` takes besides the model (each is a command-line option of the same name)."""

    top_k: int = 5
    max_upload_mb: float = 200.0
    max_duration_s: float = 1800.0
    timeline_min_s: float = 4.0  # longer videos also get the timeline: 2x the default 2 s window
    window_s: float = 2.0
    hop_s: float = 1.0
    examples: dict[str, Path] = field(default_factory=dict)  # name shown in the page -> file

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def load_model(path: str | Path, device: str = "auto") -> VideoClassifier:
    """A checkpoint file (``load_from_checkpoint``) or a model folder (``from_pretrained``), in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path {path}: no such file or folder")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if path.is_dir():
        model = VideoClassifier.from_pretrained(path, map_location=device)
    else:
        model = VideoClassifier.load_from_checkpoint(path, map_location=device)
    return model.eval()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def probe_duration(path: Path, name: str) -> float | None:
    """The video's duration in seconds from its header (nothing decoded; None when the header has none).

    Raises UploadError naming ``name`` when the file is empty or not a video PyAV can open."""
    import av  # header probing only; data/decode/ owns decoding

    if path.stat().st_size == 0:
        raise UploadError(f"{name} is empty (0 bytes): choose a video file.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadError(f"{name} has no video stream (audio only?): choose a video file.", 415)
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
            return None
    except UploadError:
        raise
    except Exception as error:  # av.error.* (InvalidDataError, ...) and anything else a broken header raises
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise UploadError(f"{name} is not a video this demo can read ({reason}).", 415) from None


def _at_least(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 frames [L, C, H, W] enlarged by a whole factor (nearest) until their shorter side is ``size`` or more."""
    factor = -(-size // min(frames.shape[-2:]))  # ceil
    return frames.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1) if factor > 1 else frames


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class Analyser:
    """Runs the model on one video at a time (a lock: one CPU or GPU is shared by every request)."""

    def __init__(self, model: VideoClassifier, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        self.lock = threading.Lock()
        # The clip each answer shows; a model without frame settings is refused here, before serving.
        self.spec = ClipSpec.of(model.hparams, needed_by="serve")

    def info(self) -> dict[str, Any]:
        hparams = self.model.hparams
        return {
            "classes": self.model.class_names,
            "backbone": hparams.get("backbone"),
            "head": hparams.get("head"),
            **{name: getattr(self.spec, name) for name in ("num_frames", "img_size", "crop")},
            "top_k": self.settings.top_k,
            "max_upload_mb": self.settings.max_upload_mb,
            "max_duration_s": self.settings.max_duration_s,
            "timeline": True,
            "timeline_min_s": self.settings.timeline_min_s,
            "examples": sorted(self.settings.examples),
        }

    def check_size(self, size: int | None, name: str) -> None:
        if size is not None and size > self.settings.max_upload_bytes:
            raise UploadError(
                f"{name} is {size / 2**20:.1f} MB; this demo takes files up to {self.settings.max_upload_mb:g} MB "
                "(--max_upload_mb).",
                413,
            )

    def analyse(self, path: Path, name: str) -> dict[str, Any]:
        """Top-k, the sampled frames as a GIF and (long videos) the timeline for the video at ``path``."""
        self.check_size(path.stat().st_size, name)
        duration = probe_duration(path, name)
        if duration is not None and duration > self.settings.max_duration_s:
            raise UploadError(
                f"{name} is {_clock(duration)} long; this demo takes videos up to "
                f"{_clock(self.settings.max_duration_s)} (--max_duration_s).",
                413,
            )
        with self.lock, tempfile.TemporaryDirectory(prefix="video_cnn_rnn_serve_") as folder:
            try:
                top = self.model.predict_video(str(path), top_k=self.settings.top_k)
                frames, length = load_clip(path, **self.spec.clip_arguments())
            except VideoDecodeError as error:
                raise UploadError(f"{name} could not be decoded: {_reason(error, path, name)}", 422) from None
            gif = Path(folder) / "frames.gif"
            write_gif(_at_least(frames, GIF_MIN_SIZE), top[0][0], gif, fps=4)
            result: dict[str, Any] = {
                "file": name,
                "duration_s": duration,
                "top_k": [{"label": label, "prob": prob} for label, prob in top],
                "sampled_frames": int(length),
                "frames_gif": _data_url(gif, "image/gif"),
                "timeline_png": None,
                "note": None,
            }
            if duration is not None and duration > self.settings.timeline_min_s:
                result.update(self._timeline(path, Path(folder)))
        return result

    def _timeline(self, path: Path, folder: Path) -> dict[str, Any]:
        settings = self.settings
        try:
            rows = self.model.predict_timeline(
                str(path), window_s=settings.window_s, hop_s=settings.hop_s, top_k=min(3, settings.top_k)
            )
            write_timeline(rows, self.model.class_names, folder, min(3, settings.top_k))
        except Exception as error:  # the whole-video answer stands without it
            log.exception("timeline failed for %s", path)
            return {"note": f"The timeline could not be drawn ({type(error).__name__}: {error})."}
        png = folder / "timeline.png"
        return {"timeline_png": _data_url(png, "image/png")} if png.is_file() else {}


def _reason(error: Exception, path: Path, name: str) -> str:
    """The decoder's message with the server's temporary path replaced by the uploaded file's name."""
    return str(error).replace(str(path), name) or type(error).__name__


def example_videos(folder: str | Path | None, class_names: list[str], scratch: Path) -> dict[str, Path]:
    """The examples the page offers: the videos in ``folder``, or, without one, a generated clip per class when
    the model's classes are the embedded synthetic dataset's (written to ``scratch``)."""
    if folder:
        found = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        return {str(p.relative_to(folder)): p for p in found}
    if not class_names or not set(class_names) <= set(SYNTHETIC_CLASSES):
        return {}
    import numpy as np

    rng = np.random.default_rng(0)
    examples = {}
    for label in class_names:
        path = scratch / f"{label}.mp4"
        write_video(path, make_clip(label, 30, 96, 96, rng), fps=10)
        examples[path.name] = path
    return examples


def create_app(model: VideoClassifier, settings: ServeSettings | None = None) -> Any:
    """The FastAPI app: ``GET /`` the page, ``GET /api/info``, ``POST /api/predict?filename=...`` (the file as the
    raw request body), ``POST /api/examples/{name}``."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.requests import ClientDisconnect
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error

    analyser = Analyser(model, settings or ServeSettings())
    page = resources.files("video_cnn_rnn").joinpath("static/serve.html").read_text(encoding="utf-8")
    app = FastAPI(title="video_cnn_rnn demo", docs_url="/api/docs", redoc_url=None)

    async def answer(path: Path, name: str) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(analyser.analyse, path, name))
        except UploadError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        except Exception as error:  # logged with its traceback here; the page gets one readable line
            log.exception("analysing %s failed", name)
            message = f"Something went wrong analysing {name}: {type(error).__name__}: {_reason(error, path, name)}"
            return JSONResponse({"error": message}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return analyser.info()

    @app.post("/api/predict")
    async def predict(request: Request, filename: str = "upload") -> JSONResponse:
        name = Path(filename).name or "upload"
        try:
            declared = request.headers.get("content-length")
            analyser.check_size(int(declared) if declared and declared.isdigit() else None, name)
        except UploadError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        with tempfile.TemporaryDirectory(prefix="video_cnn_rnn_upload_") as folder:
            path = Path(folder) / f"upload{Path(name).suffix.lower()[:8]}"
            received = 0
            try:
                with path.open("wb") as file:
                    async for chunk in request.stream():
                        received += len(chunk)
                        try:
                            analyser.check_size(received, name)
                        except UploadError as error:  # no or a false Content-Length: stop reading
                            return JSONResponse({"error": str(error)}, status_code=error.status)
                        file.write(chunk)
            except ClientDisconnect:  # the browser went away mid-upload: one log line, not a traceback
                log.warning("upload of %s aborted by the client after %d bytes", name, received)
                return JSONResponse({"error": "upload aborted"}, status_code=400)
            return await answer(path, name)

    @app.post("/api/examples/{name:path}")
    async def example(name: str) -> JSONResponse:
        path = analyser.settings.examples.get(name)
        if path is None:
            return JSONResponse({"error": f"No example named {name}."}, status_code=404)
        return await answer(path, name)

    return app


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # a requested stop is a clean one (what systemd, Docker and Kubernetes send)


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="video-cnn-rnn serve", description="A local browser demo: upload a video, see the model's answer."
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint (.ckpt) or a model folder (save_pretrained)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (no authentication)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--max_upload_mb", type=float, default=200.0, help="larger uploads are refused")
    parser.add_argument("--max_duration_s", type=float, default=1800.0, help="longer videos are refused")
    parser.add_argument("--timeline_min_s", type=float, default=4.0, help="longer videos also get a timeline")
    parser.add_argument("--window_s", type=float, default=2.0, help="timeline window")
    parser.add_argument("--hop_s", type=float, default=1.0, help="timeline hop")
    parser.add_argument("--examples", default=None, help="a folder of videos the page offers as examples")
    args = parser.parse_args(argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    # uvicorn finishes the requests in flight on SIGTERM / SIGINT, then raises the signal again: ending here through
    # the `with` below removes the examples' folder (the default SIGTERM action would kill the process first).
    signal.signal(signal.SIGTERM, _stop)
    model = load_model(args.ckpt_path, args.device)
    with (
        contextlib.suppress(KeyboardInterrupt),
        tempfile.TemporaryDirectory(prefix="video_cnn_rnn_examples_") as scratch,
    ):
        settings = ServeSettings(
            top_k=args.top_k,
            max_upload_mb=args.max_upload_mb,
            max_duration_s=args.max_duration_s,
            timeline_min_s=args.timeline_min_s,
            window_s=args.window_s,
            hop_s=args.hop_s,
            examples=example_videos(args.examples, model.class_names, Path(scratch)),
        )
        print(f"video-cnn-rnn serve: open http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
        uvicorn.run(create_app(model, settings), host=args.host, port=args.port, log_level="warning")
