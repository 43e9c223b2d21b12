"""What a training stage is given, and what it gives back.

A stage (`finetune`, `adapt`) is a function `run(ctx: StageContext) -> StageResult`. The
job (`training/job.py`) builds the context once: the config, the loaded domains, the
classifier handle, the augmenters, the checkpoint and, when resuming, its state. Stages
import this module, never each other or the job.

The context also owns what every stage's `fit` shares: the history rows, the checkpoint
commit after each epoch, TensorBoard logs, stopping on NaN, and the resume point.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError


@dataclass
class StageResult:
    """What the run summary and metrics.json report of a stage."""

    trained: str  # one line: what was trained on what
    report: Optional[dict] = None  # metrics.json entry (the `adaptation` section), if any
    lines: list = field(default_factory=list)  # extra summary lines


@dataclass
class StageContext:
    cfg: Any  # kerastl.config.Config
    run_dir: Path
    classifier: Any  # kerastl.models.factory.Classifier
    source: Any  # DomainData or None
    target: Any  # DomainData
    augmenters: dict  # "source" / "target" -> Augmenter or None
    checkpoint: Any  # kerastl.training.checkpoint.Checkpoint
    state: Optional[dict]  # the checkpoint's state when resuming, else None
    history: list  # one row per finished epoch, of every phase
    quiet: bool = False
    echo: Callable[[str], None] = print
    # The source classes the target holds, when it holds only some (a partial transfer):
    # what scores the target without its labels looks at. None: every class.
    target_classes: Optional[list] = None
    done: set = field(default_factory=set)  # phases finished (a resumed run skips them)

    def __post_init__(self):
        if self.state:
            self.done = set(self.state.get("done", []))

    @property
    def verbosity(self) -> int:
        """Keras' own progress: the live bar on a terminal; nothing in a log file, where
        the one line per epoch of `progress_callback` says what matters."""
        if self.quiet:
            return 0
        return 1 if sys.stdout.isatty() else 0

    def progress_callback(self, label: tuple, epochs: int, group: int = 1):
        """One line per epoch end: stage/phase, epoch i/N, the metrics that matter, time per
        epoch and the phase's estimated time left (`group` epochs per Keras epoch)."""
        import keras

        echo = self.echo

        class Progress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start, self.done = time.time(), 0

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                self.done += group
                epoch = (epoch + 1) * group - 1
                per_epoch = (time.time() - self.start) / self.done
                left = per_epoch * (epochs - epoch - 1)
                shown = [f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "source_accuracy", "val_accuracy", "target_accuracy")
                         if k in logs]
                echo(f"  [{label[0]}/{label[1]}] epoch {epoch + 1}/{epochs}  " + "  ".join(shown)
                     + f"  {per_epoch:.1f} s/epoch  ETA {_duration(left)}")

        return Progress()

    def announce(self, text: str):
        if not self.quiet:
            self.echo(text)

    def initial_epoch(self, phase: str) -> int:
        """0, or the epoch after the checkpoint's when the checkpoint is inside `phase`."""
        if self.state is not None and self.state.get("phase") == phase:
            return self.state["epoch"] + 1
        return 0

    def saved(self, phase: str, key: str, default=None):
        """A stage's own entry of the checkpoint state (e.g. the best epoch so far)."""
        if self.state is not None and self.state.get("phase") == phase:
            return self.state.get(key, default)
        return default

    def callbacks(self, phase: str, label: tuple, epochs: int, extra_state: Callable[[], dict] = dict,
                  group: int = 1) -> list:
        """The callbacks every `fit` of a stage runs, after the stage's own: the history row
        (its `stage` and `phase` columns from `label`), the checkpoint commit (with
        `extra_state()` merged into the state), TensorBoard, and stopping on NaN. With
        `group` epochs per Keras epoch, rows and states count epochs, not Keras epochs."""
        import keras

        from kerastl.training.checkpoint import checkpoint_callback

        history, run_dir = self.history, self.run_dir

        class Record(keras.callbacks.Callback):
            """One history row per epoch: the logs and the learning rate the epoch ended at."""

            def on_epoch_end(self, epoch, logs=None):
                row = {"stage": label[0], "phase": label[1], "epoch": (epoch + 1) * group,
                       **{k: float(v) for k, v in (logs or {}).items()}}
                try:
                    row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                except (AttributeError, TypeError, ValueError):
                    pass  # no optimizer, or a rate that is not one number
                history.append(row)
                runs.write_history(run_dir, history)

        def state_of(epoch):
            epoch = (epoch + 1) * group - 1
            finished = {phase} if epoch + 1 == epochs else set()
            return {"phase": phase, "epoch": epoch, "done": sorted(self.done | finished),
                    "history": self.history, **extra_state()}

        return [
            Record(),
            checkpoint_callback(self.checkpoint, self.classifier.model, phase, state_of),
            keras.callbacks.TensorBoard(str(self.run_dir / "logs" / phase.replace("/", "_"))),
            keras.callbacks.TerminateOnNaN(),
        ]

    def fit(self, model, train_ds, val_ds, *, phase: str, label: tuple, epochs: int, steps: int, callbacks=(),
            extra_state: Callable[[], dict] = dict, min_steps: int = 1):
        """`model.fit` from the resume point of `phase` (the checkpoint's name for it) to
        `epochs`, with the stage's `callbacks` first; the phase is then done.

        Epochs shorter than `min_steps` steps are fitted several at a time (see
        `epochs_per_round`): validation, the checkpoint commit, the history row and the
        progress line then come once per round. The batches and the weights are exactly
        those of one-epoch rounds; only the epoch-end work is done less often."""
        from kerastl.training.distribute import shard_by_data

        initial_epoch = self.initial_epoch(phase)
        group = epochs_per_round(epochs, steps, min_steps, initial_epoch)
        if initial_epoch < epochs:
            model.fit(
                shard_by_data(train_ds), epochs=epochs // group, initial_epoch=initial_epoch // group,
                steps_per_epoch=steps * group,
                validation_data=shard_by_data(val_ds), verbose=self.verbosity,
                shuffle=False,  # the datasets shuffle per epoch themselves (see build_dataset)
                callbacks=[*callbacks, *self.callbacks(phase, label, epochs, extra_state, group),
                           *([] if self.quiet else [self.progress_callback(label, epochs, group)])],
            )
        self.done.add(phase)
        self.state = None  # later phases start from their beginning

    def diverged(self) -> Optional[dict]:
        """The last history row when it holds a NaN or infinite value (the run stopped)."""
        last = self.history[-1] if self.history else {}
        return last if any(isinstance(v, float) and not np.isfinite(v) for v in last.values()) else None


def epochs_per_round(epochs: int, steps: int, min_steps: int, initial_epoch: int = 0) -> int:
    """How many epochs of `steps` steps one Keras epoch (a round) holds: the fewest that
    make at least `min_steps` steps and divide both `epochs` and the resume point, so every
    round has the same length and a resumed run starts on a round boundary.

    Fine-tuning on a few labels has epochs of one step (100 images at batch 64); there the
    epoch-end work (validation, checkpoint, logs) costs several times the step itself."""
    if steps >= min_steps:
        return 1
    fitting = [d for d in range(1, epochs + 1) if epochs % d == 0 and initial_epoch % d == 0]
    return next((d for d in fitting if d * steps >= min_steps), fitting[-1])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def require_finite(ctx: StageContext, advice: str):
    """Raises a KerastlError with `advice` when the last epoch diverged."""
    last = ctx.diverged()
    if last is not None:
        raise KerastlError(f"training diverged in {last['stage']}/{last['phase']} at epoch {last['epoch']} "
                           f"(a loss became NaN or infinite); {advice}")
