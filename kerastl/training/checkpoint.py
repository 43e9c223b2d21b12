"""The run's checkpoint: one payload for every stage, committed atomically after each epoch.

A commit writes one file under a new name, then `state.json` naming it (the commit
point), then removes the files the previous state named:

- `training-<phase>-<epoch>.npz`: the classifier's weights (what the next phase starts
  from) and everything a resumed `fit` needs of the model being trained: its variables
  (weights, Dropout's seed-generator states, counters such as the adaptation step counter)
  and every optimizer's variables, plus the classifier's own seed-generator states.

Plain arrays in `model.weights` order, not Keras' `save_weights` (.h5): a commit happens
after every epoch, and one .npz file writes many times faster than an .h5 file of layers.

`CheckpointCallback` has Keras' `BackupAndRestore` shape: it restores the training model in
`on_train_begin` when the checkpoint is inside the phase being fitted, and commits in
`on_epoch_end`; the same callback serves fine-tuning and adaptation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError

# Keys of state.json that name files (also the kinds earlier versions wrote, for cleanup).
FILES = ("weights", "training", "optimizer", "model", "rng")


def seed_states(model) -> list:
    """The seed-generator states of `model`'s layers (Dropout's): among `model.variables`
    but not its weights, so `save_weights` leaves them out."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def training_variables(model) -> list:
    """The variables of `model` and of every optimizer it trains with, each once."""
    optimizers = model.optimizers() if hasattr(model, "optimizers") else [model.optimizer]
    out, seen = [], set()
    for v in [*model.variables, *(v for o in optimizers if o is not None for v in o.variables)]:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


class Checkpoint:
    """RUN/checkpoint/: commit, read the state, restore."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / runs.CHECKPOINT
        self.state_path = self.dir / "state.json"

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        return json.loads(self.state_path.read_text())

    def commit(self, model, classifier, state: dict):
        """Saves `classifier` and the training state of `model` under `state` (which holds
        at least `phase` and `epoch`)."""
        arrays = {f"t{i}": v.numpy() for i, v in enumerate(training_variables(model))}
        arrays.update({f"c{i}": v.numpy() for i, v in enumerate(seed_states(classifier))})
        arrays.update({f"w{i}": v.numpy() for i, v in enumerate(classifier.weights)})
        tag = f"{state['phase']}-{state['epoch']}".replace("/", "_")
        path = self.dir / f"training-{tag}.npz"
        runs.atomic_save(path, lambda p: np.savez(p, **arrays))
        old = self.load_state() or {}
        runs.write_json(self.state_path, dict(state, training=path.name))
        for key in FILES:
            if old.get(key) and old[key] != path.name:
                (self.dir / old[key]).unlink(missing_ok=True)

    def _arrays(self, state: dict, prefix: str) -> list:
        with np.load(self.dir / state["training"]) as f:
            keys = sorted((k for k in f.files if k.startswith(prefix)), key=lambda k: int(k[1:]))
            return [f[k] for k in keys]

    def _assign(self, variables: list, values: list, what: str):
        if len(values) != len(variables):
            raise KerastlError(
                f"{self.dir}: the checkpoint's {what} does not fit this run ({len(values)} values for "
                f"{len(variables)} variables); was the config changed since the run started?")
        for var, value in zip(variables, values):
            var.assign(value)

    def restore_classifier(self, classifier, state: dict):
        """The classifier as committed, with its Dropout random states."""
        if "training" not in state:
            raise KerastlError(f"{self.dir}: this checkpoint was written by an older kerastl and cannot be "
                               "resumed by this one; start the run again")
        if state.get("weights"):  # an earlier kerastl wrote the classifier as Keras .weights.h5
            classifier.load_weights(self.dir / state["weights"])
        else:
            self._assign(classifier.weights, self._arrays(state, "w"), "classifier weights")
        self._assign(seed_states(classifier), self._arrays(state, "c"), "classifier state")

    def restore_training(self, model, state: dict):
        """Weights, optimizer state, random states and counters of the model being trained."""
        self._assign(training_variables(model), self._arrays(state, "t"), "training state")


def checkpoint_callback(checkpoint: Checkpoint, classifier, phase: str, state_of):
    """A Keras callback: restores the fit model when the checkpoint is inside `phase`, and
    commits after every epoch the state `state_of(epoch)` returns."""
    import keras

    class CheckpointCallback(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            state = checkpoint.load_state()
            if state is not None and state.get("phase") == phase and "training" in state:
                checkpoint.restore_training(self.model, state)

        def on_epoch_end(self, epoch, logs=None):
            if not all(np.isfinite(float(v)) for v in (logs or {}).values()):
                return  # a diverged epoch is not worth resuming from (TerminateOnNaN stops the run)
            checkpoint.commit(self.model, classifier, state_of(epoch))

    return CheckpointCallback()
