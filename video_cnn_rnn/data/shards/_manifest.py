"""The shard layout's names and its manifest, read without LitData: ``<root>/<split>/`` (LitData's ``index.json``
and chunks) and ``<root>/video_cnn_rnn_shards.json``; a root is a local folder or a bucket URL whose credentials come
from the environment.
"""

import json
import os
from pathlib import Path
from typing import Any

from video_cnn_rnn.data.annotations import ManifestError
from video_cnn_rnn.data.shards._checks import check_split

STREAMING_EXTRA = "LitData shards need the streaming extra: pip install 'video_cnn_rnn[streaming]'"
MANIFEST_NAME = "video_cnn_rnn_shards.json"
FORMAT = "video_cnn_rnn.shards"
FORMAT_VERSION = 1
META_FIELDS: tuple[str, ...] = ("path", "group", "num_frames", "fps", "keyframes")
# The environment variables a bucket's client reads its credentials from (any one group is enough).
CREDENTIALS: dict[str, list[tuple[str, ...]]] = {
    "s3": [
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_PROFILE",),
        ("AWS_WEB_IDENTITY_TOKEN_FILE",),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ],
    "gs": [("GOOGLE_APPLICATION_CREDENTIALS",)],
    "azure": [("AZURE_STORAGE_CONNECTION_STRING",), ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY")],
}


def is_url(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("local:")


def check_credentials(location: str) -> None:
    """A bucket URL needs credentials in the environment (never in a config file): raise naming what to set."""
    if not is_url(location):
        return
    scheme = str(location).split("://", 1)[0]
    groups = CREDENTIALS.get(scheme)
    if groups is None:
        raise ManifestError(f"{location}: unsupported storage scheme {scheme!r}; use a folder or {sorted(CREDENTIALS)}")
    if not any(all(os.environ.get(name) for name in group) for group in groups):
        wanted = " or ".join("+".join(group) for group in groups)
        raise ManifestError(f"{location}: no credentials for {scheme}:// in the environment; set {wanted}")


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a folder or a URL."""
    return "/".join([str(root).rstrip("/"), *parts])


def read_manifest(root: str) -> dict[str, Any]:
    """The root's manifest, checked: our format and version, and (for a local root) every split's index and chunk
    files present. Raises ``ManifestError`` naming what is missing or which version wrote it."""
    check_credentials(root)
    if is_url(root):
        import tempfile

        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / MANIFEST_NAME
            try:
                _get_fs_provider(join(root, MANIFEST_NAME)).download_file(join(root, MANIFEST_NAME), str(local))
            except Exception as error:
                raise ManifestError(f"{join(root, MANIFEST_NAME)}: cannot read the shard manifest ({error})") from error
            manifest = json.loads(local.read_text())
    else:
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{path}: missing; {root} is not a shard folder (write one with video-cnn-rnn shard)")
        manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{root}: shard format {manifest.get('format')!r} version {manifest.get('format_version')!r}, written by"
            f" video_cnn_rnn {manifest.get('package_version')!r}; this version reads {FORMAT!r} version"
            f" {FORMAT_VERSION}: write the shards again with this version's video-cnn-rnn shard"
        )
    if not is_url(root):
        for split, info in manifest["splits"].items():
            folder = Path(root) / split
            missing = [name for name in ["index.json", *info["chunks"]] if not (folder / name).is_file()]
            if missing:
                shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
                raise ManifestError(f"{folder}: {len(missing)} shard file(s) missing: {shown}")
            check_split(Path(root), split, info)  # index.json, chunk sizes and headers agree with the manifest
    return manifest
