"""LitData shards: videos packed into chunks under a root (a local folder or a bucket URL), written by
``video-cnn-rnn shard`` and trained from with ``data.streaming=<root>``.

The layout: one LitData dataset per split, ``<root>/<split>/index.json`` and its chunks, and the manifest
``<root>/video_cnn_rnn_shards.json`` (class names, settings, the items per split and the chunk files with their
digests, the format and package versions, the videos left out and why). An item is ``{"video", "label", "meta"}``:
the video's encoded bytes, unchanged (or re-encoded), its label id (-1 when unlabelled), and a JSON string of
``META_FIELDS``: its source path and group, and what a sampler needs without decoding (frame count, frame rate,
the keyframes' frame indices in display order).

This face imports without LitData: the manifest (``read_manifest``, ``check_credentials``), the checks
(``check_split``) and the data module's side (``ShardSource``). Reading and writing need the ``streaming`` extra
and are modules of their own: ``video_cnn_rnn.data.shards.reader`` (``ShardedVideoDataset``, ``ShardItems``,
``ResumableStreamingLoader``) and ``video_cnn_rnn.data.shards.writer`` (``write_shards``, ``reencode``, the
``shard`` command).
"""

from video_cnn_rnn.data.shards._checks import check_split
from video_cnn_rnn.data.shards._manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    META_FIELDS,
    check_credentials,
    is_url,
    join,
    read_manifest,
)
from video_cnn_rnn.data.shards._source import STAGE_SPLITS, ShardSource

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "META_FIELDS",
    "STAGE_SPLITS",
    "ShardSource",
    "check_credentials",
    "check_split",
    "is_url",
    "join",
    "read_manifest",
]
