"""Choosing which epoch's model a run keeps.

`BestEpoch` keeps the classifier weights of the epoch with the highest score of a logged
metric (`adapt.selection: source_val` monitors the source validation accuracy), written
atomically beside the checkpoint, so a resumed run keeps comparing against the same best.
"""

from __future__ import annotations

import math
from pathlib import Path

from kerastl import runs


def best_epoch_callback(classifier, path: Path, monitor: str = "val_accuracy", best: dict | None = None):
    """A Keras callback saving `classifier`'s weights to `path` whenever `logs[monitor]`
    beats the best so far. `best` ({"score", "epoch"}) continues a resumed run's record;
    the callback's `best` dict is what the checkpoint state keeps."""
    import keras

    class BestEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = dict(best or {})

        def on_epoch_end(self, epoch, logs=None):
            score = float((logs or {}).get(monitor, math.nan))
            if math.isfinite(score) and score > self.best.get("score", -math.inf):
                runs.atomic_save(path, classifier.save_weights)
                self.best.update(score=score, epoch=epoch + 1)

        def restore(self) -> int | None:
            """Loads the best epoch's weights into `classifier`; returns that epoch (None
            when no epoch was scored)."""
            if "epoch" not in self.best or not Path(path).exists():
                return None
            classifier.load_weights(path)
            return self.best["epoch"]

    return BestEpoch()
