"""`kerastl rank`: transferability scores of candidate starting points on a target's labels.

A candidate is a kerastl run directory (its classifier: features, and predictions for
LEEP) or a keras.applications backbone, `NAME` with the config's `model.weights` or
`NAME:WEIGHTS` (imagenet, none, a weights file). Each one's features of the target's
labelled training images (the ones fine-tuning would use, no augmentation) are scored by
LogME and H-score, and runs also by LEEP; candidates are ranked by one of them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError


@dataclass
class Ranked:
    candidate: str
    description: str
    images: int
    scores: dict  # score name -> value (LEEP only for candidates with a classifier)
    seconds: float


def _backbone_features(cfg, name: str, weights: Optional[str], num_classes: int):
    """The pooled features model of a keras.applications backbone built as the config's
    model section says (its input size: the one fine-tuning would use), with `name` and,
    when given, `weights`; `backbone_args` only when `name` is the config's backbone."""
    from kerastl.models.backbones import get_backbone_spec
    from kerastl.models.factory import build_classifier

    spec = get_backbone_spec(name)
    same = get_backbone_spec(cfg.model.backbone).name == spec.name
    model_cfg = dataclasses.replace(cfg.model, backbone=spec.name, weights=weights or cfg.model.weights,
                                    backbone_args=cfg.model.backbone_args if same else {},
                                    bottleneck=None, hidden=[])  # untrained layers would only blur the features
    classifier = build_classifier(model_cfg, num_classes)
    return classifier.features, None, classifier.input_size, f"{spec.name} (weights: {model_cfg.weights})"


def _run_features(path: str):
    from kerastl.models.factory import features_model

    model = runs.load_model(path)
    run_cfg = runs.read_config(path)
    return (features_model(model), model, int(model.input_shape[1]),
            f"run {run_cfg.name}: {run_cfg.model.backbone} ({len(runs.read_labels(Path(path)))} classes)")


def rank(cfg, candidates: list[str], by: str = "logme", echo=print) -> list[Ranked]:
    """Scores every candidate on the target's labelled training images; best first by `by`."""
    import keras

    from kerastl.data.domain import load_domain
    from kerastl.evaluation.transferability import SCORES, leep
    from kerastl.models.inference import outputs
    from kerastl.data.pipeline import build_dataset

    domain = load_domain(cfg.target, cfg.data_seed, "target")
    if not domain.labelled:
        raise KerastlError(f"target {domain.name}: its images have no labels; ranking scores features against labels")
    split = domain.splits["train"]
    labels = np.asarray(split.labels)
    if len(np.unique(labels)) < 2:
        raise KerastlError(f"target {domain.name}: its training images hold one class; scores need two or more")
    ranked = []
    for candidate in candidates:
        start = time.perf_counter()
        keras.utils.set_random_seed(cfg.seed)  # a backbone without weights: the same random ones each time
        if runs.is_run_dir(candidate):
            features_model, classifier, size, description = _run_features(candidate)
        else:
            name, _, weights = candidate.partition(":")
            features_model, classifier, size, description = _backbone_features(cfg, name, weights or None,
                                                                               domain.num_classes)
        ds = build_dataset(split, size, cfg.train.batch_size, domain.num_classes, cache=False)
        features, probabilities, _ = outputs(ds, features_model, None)
        scores = {name: fn(features, labels) for name, fn in SCORES.items()}
        if classifier is not None:
            probabilities = np.concatenate([np.asarray(classifier(x, training=False)) for x, _ in ds])
            scores["leep"] = leep(probabilities, labels)
        ranked.append(Ranked(candidate, description, len(labels), scores, time.perf_counter() - start))
        echo(f"  {candidate}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
             + f" ({ranked[-1].seconds:.1f} s)")
        keras.backend.clear_session()
    if by == "leep" and any("leep" not in r.scores for r in ranked):
        raise KerastlError("--by leep: LEEP needs a classifier; give run directories only, or rank by logme / h_score")
    return sorted(ranked, key=lambda r: -r.scores[by])


def format_table(ranked: list[Ranked], by: str) -> str:
    names = ["logme", "h_score"] + (["leep"] if any("leep" in r.scores for r in ranked) else [])
    rows = [["rank", "candidate", *names, "seconds"]]
    for i, r in enumerate(ranked, 1):
        rows.append([str(i), r.candidate, *(f"{r.scores[n]:.4f}" if n in r.scores else "-" for n in names),
                     f"{r.seconds:.1f}"])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines) + f"\n  ranked by {by} on {ranked[0].images} labelled target images (higher is better)"
