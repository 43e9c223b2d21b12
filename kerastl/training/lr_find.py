"""`kerastl lr-find`: the loss against an exponentially growing learning rate (Smith, 2017;
fastai's `lr_find`), and a suggested rate for the config's stage.

The model, data, augmentation, optimizer, backbone rate multiplier and BatchNormalization
rule are the stage's own (its full phase: the backbone unfrozen as `model.unfreeze` says);
only the learning rate differs, growing from `min_lr` to `max_lr` over `steps` steps, one
batch each. The run stops early once the smoothed loss exceeds 4x its minimum (or is not
finite). The suggestion is fastai's "valley": the rate a little past the start of the
longest stretch over which the smoothed loss keeps falling; the steepest point and a tenth
of the minimum's rate are shown beside it. Nothing is saved of the model: a sweep trains
it far past any useful rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError


@dataclass
class LrFind:
    stage: str
    rates: list = field(default_factory=list)
    losses: list = field(default_factory=list)  # raw, per step
    smoothed: list = field(default_factory=list)
    suggestions: dict = field(default_factory=dict)  # valley / steepest / minimum_tenth -> rate


def smooth(losses, beta: float = 0.98) -> list:
    """fastai's debiased exponential moving average of the step losses."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def suggest(rates, smoothed) -> dict:
    """valley (fastai's default), steepest (largest fall per log-rate step) and a tenth of
    the rate at the minimum."""
    n = len(smoothed)
    if n < 5:
        raise KerastlError(f"lr-find: only {n} usable steps before the loss diverged; lower --min-lr or "
                           "raise --steps")
    longest = [1] * n  # longest falling run of losses ending at i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[best_end]:
            best_end = i
    start = best_end - longest[best_end] + 1
    third = (best_end - start) / 3
    valley = start + int(third) + int(third / 2)
    slopes = np.gradient(np.asarray(smoothed), np.log(np.asarray(rates)))
    return {"valley": float(rates[valley]), "steepest": float(rates[int(np.argmin(slopes))]),
            "minimum_tenth": float(rates[int(np.argmin(smoothed))] / 10)}


def lr_find(cfg, *, stage: str | None = None, start_from: str | None = None, steps: int = 100,
            min_lr: float = 1e-7, max_lr: float = 10.0, echo=print) -> LrFind:
    """Runs the sweep for `stage` (pretrain or finetune; default the config's first)."""
    import keras

    from kerastl.data.augment import build_augmenter
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset, steps_per_epoch
    from kerastl.models.factory import Classifier, build_classifier, features_model, nested_backbone, set_trainable
    from kerastl.optimizers import make_optimizer
    from kerastl.training.distribute import configure_threads
    from kerastl.training.recipe import resolve_bn
    from kerastl.training.transfer_model import TransferModel

    if cfg.adapt is not None:
        raise KerastlError("lr-find: this config adapts (it has an adapt section); lr-find runs the pretrain "
                           "and finetune stages of fine-tuning configs")
    stage = stage or ("pretrain" if cfg.source is not None else "finetune")
    if stage == "pretrain" and cfg.source is None:
        raise KerastlError("lr-find --stage pretrain: the config has no source section to pretrain on")
    if (stage == "finetune" and cfg.source is not None and start_from is None
            and cfg.model.weights.lower() == "none"):
        raise KerastlError("lr-find --stage finetune: fine-tuning here starts from the pretraining this config "
                           "does first; give --from RUN, a finished run of it (e.g. `kerastl train` of the same "
                           "config), to start from its model")
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    keras.utils.set_random_seed(cfg.seed)
    section = cfg.source if stage == "pretrain" else cfg.target
    domain = load_domain(section, cfg.data_seed, "source" if stage == "pretrain" else "target")
    augmenter = build_augmenter(section.augment, "source" if stage == "pretrain" else "target")
    if start_from:
        model = runs.load_model(runs.require_run(start_from))
        if model.output_shape[-1] != domain.num_classes:
            raise KerastlError(f"--from {start_from}: its model has {model.output_shape[-1]} classes, "
                               f"{domain.name} has {domain.num_classes}")
        classifier = Classifier(model=model, backbone=nested_backbone(model), features=features_model(model),
                                head=None, input_size=int(model.input_shape[1]))
    else:
        classifier = build_classifier(cfg.model, domain.num_classes)
    st = getattr(cfg.train, stage)
    set_trainable(classifier.backbone, cfg.model.unfreeze, resolve_bn(cfg, stage))
    split = domain.splits["train"]
    per_epoch = steps_per_epoch(split, cfg.train.batch_size)
    epochs = math.ceil(steps / per_epoch)
    ds = build_dataset(split, classifier.input_size, cfg.train.batch_size, domain.num_classes, training=True,
                       seed=cfg.seed, augmenter=augmenter, cache=section.cache is not False, epochs=epochs)

    ratio = max_lr / min_lr

    class Exponential(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, scale=1.0):
            self.scale = scale

        def __call__(self, step):
            progress = keras.ops.cast(step, "float32") / max(steps - 1, 1)
            return self.scale * min_lr * keras.ops.power(ratio, progress)

    two_rates = st.backbone_lr_mult != 1.0
    model = TransferModel(classifier)
    model.compile(optimizer=make_optimizer(st.optimizer, Exponential(), st.weight_decay),
                  backbone_optimizer=(make_optimizer(st.optimizer, Exponential(st.backbone_lr_mult), st.weight_decay)
                                      if two_rates else None),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=st.label_smoothing))
    result = LrFind(stage=stage)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = float(logs["loss"])
            result.rates.append(min_lr * ratio ** (epoch / max(steps - 1, 1)))
            result.losses.append(loss)
            result.smoothed = smooth(result.losses)
            if not math.isfinite(loss) or result.smoothed[-1] > 4 * min(result.smoothed):
                self.model.stop_training = True
            if (epoch + 1) % 20 == 0:
                echo(f"  step {epoch + 1}/{steps}: lr {result.rates[-1]:.2e}, smoothed loss {result.smoothed[-1]:.4f}")

    echo(f"lr-find on {stage} ({domain.name}, {len(split)} images): lr {min_lr:g} -> {max_lr:g} over {steps} steps")
    # One-step epochs: Keras logs each epoch's mean loss, which is then the step's own.
    model.fit(ds, epochs=steps, steps_per_epoch=1, verbose=0, shuffle=False, callbacks=[Record()])
    # As fastai: the first tenth (the average still settling) and the last five steps (the
    # blow-up) are no candidates.
    kept = [i for i in range(len(result.smoothed))[steps // 10:len(result.smoothed) - 5]
            if math.isfinite(result.smoothed[i])]
    result.suggestions = suggest([result.rates[i] for i in kept], [result.smoothed[i] for i in kept])
    return result


def write(result: LrFind, folder: Path) -> Path:
    """FOLDER/lr_find.csv (rate, loss, smoothed loss per step) and FOLDER/lr_find.png."""
    from kerastl.evaluation.plots import lr_find_png

    folder.mkdir(parents=True, exist_ok=True)
    rows = ["lr,loss,smoothed_loss"] + [f"{r:.6g},{v:.6g},{s:.6g}"
                                        for r, v, s in zip(result.rates, result.losses, result.smoothed)]
    runs.atomic_write(folder / "lr_find.csv", "\n".join(rows) + "\n")
    png = folder / "lr_find.png"
    png.write_bytes(lr_find_png(result.rates, result.smoothed, result.suggestions, f"lr-find: {result.stage}"))
    return png
