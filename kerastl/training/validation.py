"""Scoring every epoch of an adaptation run without target labels.

At the end of each epoch the classifier runs once over three small fixed sets: the source
validation split (its labels are the source's), held-back target images (the target
validation split; their labels are never read) and the target test split. The label-free
validators of `evaluation/validators.py` are computed from the first two and logged as
`validator_<name>` (so they land in history.csv and can choose the epoch:
`adapt.selection`). The target test accuracy of the epoch is logged as
`target_test_accuracy`: it never chooses anything, it is what lets a run (and the
benchmark) say how close each validator's choice comes to the best epoch there was.
"""

from __future__ import annotations

import numpy as np

from kerastl.evaluation.validators import VALIDATORS, score_all

LIMIT = 1000  # images per set: enough for the statistics, cheap enough for every epoch


def validators_callback(classifier, source_val, target_heldout, target_test, *, batch: int, num_classes: int,
                        seed: int = 0, target_classes=None):
    """A Keras callback adding `validator_<name>` for every validator (and
    `target_test_accuracy`) to each epoch's logs; `scores` keeps them per epoch.

    With `target_classes` (the classes a partial target holds), the target's predictions
    are read as the saved model will give them: those classes' probabilities, renormalized.
    Put it before any callback that reads those logs (the best-epoch one)."""
    import keras

    from kerastl.data.pipeline import build_dataset
    from kerastl.models.inference import outputs

    def dataset(split):  # decoded once, kept as uint8 in memory (<= LIMIT images)
        sub = split.subset(np.arange(min(len(split), LIMIT)))
        return build_dataset(sub, classifier.input_size, batch, num_classes, cache=True)

    sets = {"source": dataset(source_val), "target": dataset(target_heldout),
            "test": dataset(target_test) if target_test is not None else None}

    class Validators(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.scores: list[dict] = []

        def on_epoch_end(self, epoch, logs=None):
            fs, ps, ys = outputs(sets["source"], classifier.features, classifier.head)
            ft, pt, _ = outputs(sets["target"], classifier.features, classifier.head)  # labels not read
            pt = restricted(pt, target_classes)
            scores = score_all(source_probs=ps, source_labels=ys, source_features=fs,
                               target_probs=pt, target_features=ft, seed=seed)
            row = {"epoch": epoch + 1, **scores}
            if sets["test"] is not None:
                _, p, y = outputs(sets["test"], classifier.features, classifier.head)
                predicted = np.argmax(restricted(p, target_classes), axis=1)
                if target_classes is not None:
                    predicted = np.asarray(target_classes)[predicted]
                row["target_test_accuracy"] = float(np.mean(predicted == y))
            self.scores.append(row)
            if logs is not None:
                logs.update({f"validator_{k}": v for k, v in scores.items()})
                if "target_test_accuracy" in row:
                    logs["target_test_accuracy"] = row["target_test_accuracy"]

    return Validators()


def restricted(probs: np.ndarray, classes) -> np.ndarray:
    """`probs` with only the columns of `classes`, renormalized (all of them when None)."""
    if classes is None:
        return probs
    kept = probs[:, classes]
    return kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-12)


def choices(rows: list[dict]) -> dict:
    """For each validator, the epoch it would choose (highest score; the first of ties) and
    that epoch's target test accuracy; `oracle` is the epoch with the best target test
    accuracy (when the rows have it)."""
    out = {}
    for name in VALIDATORS:
        scored = [r for r in rows if np.isfinite(r.get(f"validator_{name}", np.nan))]
        if scored:
            best = max(scored, key=lambda r: r[f"validator_{name}"])
            out[name] = {"epoch": int(best["epoch"]), "target_test_accuracy": best.get("target_test_accuracy")}
    with_acc = [r for r in rows if "target_test_accuracy" in r]
    if with_acc:
        best = max(with_acc, key=lambda r: r["target_test_accuracy"])
        out["oracle"] = {"epoch": int(best["epoch"]), "target_test_accuracy": best["target_test_accuracy"]}
    return out
