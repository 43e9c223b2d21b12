"""Scoring trials against each other without target labels.

Every finished trial runs once over the same three sets (the trials share their split):
the source validation split (its labels are the source's), the held-back target images
(the target validation split; labels never read) and the target test split. The outputs
are kept in the trial's run directory (`sweep_outputs.npz`), so criteria can be computed
again without the models. The criteria, all "higher is better":

- the label-free validators every run records per epoch (`evaluation/validators.py`:
  source_val, entropy, im, bnm, snd, dev), now on the trial's kept model;
- `agreement`: the mean share of held-back target images on which the trial's predicted
  class equals each other trial's. A run stuck on a wrong class mapping can be confident
  (high entropy-style scores) but disagrees with the runs that found the right one;
- `im_agree`: the mean of a trial's rank by `im` and by `agreement` (confident and diverse,
  and in line with the others).

With target labels, each trial's target test accuracy (`oracle`) is recorded beside them:
it never chooses anything; it is how the regret of each criterion's pick is measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerastl.evaluation.validators import VALIDATORS, score_all

OUTPUTS = "sweep_outputs.npz"
LIMIT = 1000  # held-back and source validation images per trial: as the per-epoch validators
CRITERIA = (*VALIDATORS, "agreement", "im_agree")


def trial_outputs(run_dir: Path, domains, batch: int) -> dict:
    """The trial's predictions on the shared sets (written to RUN/sweep_outputs.npz once)."""
    from kerastl import runs
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.factory import features_model
    from kerastl.models.inference import over_dataset

    path = Path(run_dir) / OUTPUTS
    if path.exists():
        with np.load(path) as f:
            return dict(f)
    model = runs.load_model(run_dir)
    size = int(model.inputs[0].shape[1])
    feats = features_model(model)
    out = {}
    source, target = domains
    sets = {"source": (source, "val", LIMIT), "heldout": (target, "val", LIMIT), "test": (target, "test", None)}
    for key, (domain, split_name, limit) in sets.items():
        split = domain.splits.get(split_name)
        if split is None or len(split) == 0:
            continue
        if limit is not None:
            split = split.subset(np.arange(min(len(split), limit)))
        ds = build_dataset(split, size, batch, domain.num_classes, cache=False)
        probs = over_dataset(ds, model)
        out[f"{key}_probs"] = probs["outputs"]
        if key != "test":
            out[f"{key}_features"] = over_dataset(ds, feats)["outputs"]
        if key == "source" or domain.labelled:
            out[f"{key}_labels"] = probs["labels"]
    runs.atomic_save(path, lambda p: np.savez(p, **out))
    return out


def load_domains(cfg):
    """(source, target) as every trial of the sweep splits them."""
    from kerastl.native_logs import import_tensorflow_quietly

    import_tensorflow_quietly()
    import dataclasses

    from kerastl.data.domain import load_domain

    source = load_domain(cfg.source, cfg.data_seed, "source")
    target = load_domain(cfg.target, cfg.data_seed, "target")
    if not target.labelled:
        target = dataclasses.replace(target, class_names=list(source.class_names))
    return source, target


def own_scores(outputs: dict, seed: int = 0) -> dict:
    """The validators of one trial's outputs, and its oracle accuracy when known."""
    if "source_probs" not in outputs or "heldout_probs" not in outputs or len(outputs["heldout_probs"]) < 2:
        scores = {name: float("nan") for name in VALIDATORS}
    else:
        scores = score_all(source_probs=outputs["source_probs"], source_labels=outputs["source_labels"],
                           source_features=outputs["source_features"], target_probs=outputs["heldout_probs"],
                           target_features=outputs["heldout_features"], seed=seed)
    if "test_labels" in outputs:
        scores["oracle"] = float(np.mean(np.argmax(outputs["test_probs"], axis=1) == outputs["test_labels"]))
    return scores


def _ranks(values: list[float]) -> np.ndarray:
    """0 for the lowest ... n-1 for the highest; NaN ranks lowest."""
    v = np.array([x if np.isfinite(x) else -np.inf for x in values])
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    return ranks


def criteria(trials: list[dict]) -> list[dict]:
    """Every criterion of every trial. `trials`: [{"scores": own_scores, "heldout": the
    trial's predicted classes on the held-back images}]; returns one dict per trial."""
    out = [dict(t["scores"]) for t in trials]
    preds = [np.asarray(t["heldout"]) for t in trials]
    for i, row in enumerate(out):
        others = [np.mean(preds[i] == preds[j]) for j in range(len(preds)) if j != i and len(preds[j])]
        row["agreement"] = float(np.mean(others)) if others and len(preds[i]) else float("nan")
    if out:
        ranks = (_ranks([r.get("im", np.nan) for r in out]) + _ranks([r["agreement"] for r in out])) / 2
        for row, rank in zip(out, ranks):
            row["im_agree"] = float(rank)
    return out


def pick(rows: list[dict], criterion: str) -> int | None:
    """The index of the row with the highest `criterion` (the first of ties), or None."""
    scored = [(i, r[criterion]) for i, r in enumerate(rows) if np.isfinite(r.get(criterion, np.nan))]
    if not scored:
        return None
    return max(scored, key=lambda ir: (ir[1], -ir[0]))[0]


def top(rows: list[dict], criterion: str, k: int) -> list[int]:
    """The indices of the `k` rows ranked highest by `criterion` (ties: the earlier row)."""
    scored = [(i, r[criterion]) for i, r in enumerate(rows) if np.isfinite(r.get(criterion, np.nan))]
    return [i for i, _ in sorted(scored, key=lambda ir: (-ir[1], ir[0]))[:k]]


def regrets(rows: list[dict]) -> dict:
    """For each criterion, the oracle accuracy of its pick and its regret (the best trial's
    oracle accuracy minus the pick's); {} without oracle accuracies."""
    if not rows or any("oracle" not in r for r in rows):
        return {}
    best = max(r["oracle"] for r in rows)
    out = {}
    for name in CRITERIA:
        i = pick(rows, name)
        if i is not None:
            out[name] = {"trial": i, "oracle": rows[i]["oracle"], "regret": best - rows[i]["oracle"]}
    return out
