"""The import paths that moved into ``video_cnn_rnn.data.decode`` (issue 27) still work for a release, and warn."""

import importlib
import sys

import pytest

from video_cnn_rnn.data import decode


@pytest.mark.parametrize("module", ["video_cnn_rnn.data.decoding", "video_cnn_rnn.data.windows"])
def test_a_moved_module_warns_and_gives_the_same_names(module):
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match="video_cnn_rnn.data.decode"):
        moved = importlib.import_module(module)
    for name in moved.__all__:
        assert getattr(moved, name) is getattr(decode, name)
