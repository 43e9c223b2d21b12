"""TensorFlow's and LiteRT's own C++ log lines, kept off the user's terminal.

TensorFlow 2.21 writes its start-up lines (the absl "before InitializeLog" notice, oneDNN,
CUDA probing and a failed `cuInit` on machines without a GPU) from C++, and LiteRT announces
its XNNPACK delegate the same way, before TF_CPP_MIN_LOG_LEVEL or any Python logger can
act: only the file descriptor itself can hold them back. `kerastl --verbose` lets them
through.
"""

from __future__ import annotations

import contextlib
import os
import sys

VERBOSE = {"on": False}  # set by `kerastl --verbose`


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null for the block (unless --verbose); a Python
    exception raised inside still propagates, after stderr is restored."""
    if VERBOSE["on"]:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    """Imports TensorFlow and lets it find its devices (where CUDA probing prints) quietly."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_silenced():
        import tensorflow as tf

        # Device discovery is lazy and would otherwise print later, mid-run. Listing physical
        # devices leaves threads and logical devices configurable.
        tf.config.list_physical_devices()
