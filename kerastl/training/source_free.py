"""`kerastl adapt RUN --target DATASET`: source-free adaptation of a finished run (SHOT).

No source image is read. The run's classifier keeps its head (the source hypothesis) frozen;
its features train on the unlabelled target images with SHOT's loss (Liang et al., ICML 2020):

    information maximization (each prediction's entropy down, the entropy of the batch's
    mean prediction up) + beta x cross-entropy on pseudo-labels

where the pseudo-labels come from class centroids in feature space (cosine similarity,
features with a 1 appended; centroids weighted by the predicted probabilities, then once
more from the labels they give), recomputed before every epoch. After each epoch, target-only
label-free scores are computed on held-back target images (the target's validation split,
labels unread); the epoch kept is the best by `selection`, the starting model (epoch 0)
included, so an adaptation that only lowers the score keeps the run's own weights. The new
run directory records which run it started from.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from kerastl import runs
from kerastl.config import dump_config
from kerastl.errors import DataError, KerastlError

log = logging.getLogger("kerastl")

SCORES = ("entropy", "im", "bnm")  # label-free, from the target's predictions alone


def pseudo_labels(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """SHOT's self-supervised labels: nearest class centroid by cosine similarity."""
    f = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    weights = probs
    for _ in range(2):  # soft centroids, then the centroids of the hard labels they give
        centroids = (weights.T @ f) / (weights.sum(axis=0)[:, None] + 1e-8)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-8
        labels = np.argmax(f @ centroids.T, axis=1)
        weights = np.eye(probs.shape[1])[labels]
    return labels.astype(np.int32)


def _target(cfg, dataset: str, class_names: list[str]):
    """The target domain from `dataset` with the run's split fractions; a labelled one is
    renumbered to the run's classes (its labels only evaluate)."""
    from kerastl.data.domain import load_domain, onto_classes

    section = dataclasses.replace(cfg.target, dataset=dataset, labels_per_class=None, classes=None, augment={})
    target = load_domain(section, cfg.data_seed, "target")
    if not target.labelled:
        return dataclasses.replace(target, class_names=list(class_names)), section
    return onto_classes(target, class_names, "--target"), section


def adapt_run(run: str, dataset: str, *, out: str | None = None, epochs: int = 10, beta: float = 0.1,
              lr: float = 0.005, batch_size: int | None = None, selection: str = "im", seed: int | None = None,
              quiet: bool = False, echo=print):
    """Adapts run `run` to the images of `dataset` without source data; returns the new run
    directory and its metrics (a `job.RunResult`)."""
    import keras
    import tensorflow as tf

    from kerastl.data.pipeline import build_dataset, steps_per_epoch
    from kerastl.evaluation.validators import bnm, entropy, information_maximization
    from kerastl.models.factory import features_model
    from kerastl.models.inference import outputs
    from kerastl.training.distribute import configure_threads
    from kerastl.training.job import RunResult, evaluate_splits, weights_digest, write_run_report

    if selection not in (*SCORES, "last"):
        raise KerastlError(f"--selection {selection}: use one of {', '.join((*SCORES, 'last'))}")
    parent = runs.require_run(run, need=(runs.MODEL, runs.CONFIG))
    cfg = runs.read_config(parent)
    class_names = runs.read_labels(parent)
    seed = cfg.seed if seed is None else seed
    batch = batch_size or cfg.train.batch_size
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    keras.utils.set_random_seed(seed)
    started = time.time()
    target, section = _target(cfg, dataset, class_names)
    pool = _unlabelled(target.splits.get("pool", target.splits["train"]))
    heldout = target.splits.get("val")
    if selection != "last" and (heldout is None or len(heldout) < 2):
        raise DataError(f"--selection {selection} scores held-back target images: {dataset!r} has "
                        f"{0 if heldout is None else len(heldout)} (the run's target.val_fraction is "
                        f"{cfg.target.val_fraction}); use --selection last")

    model = runs.load_model(parent)
    size = int(model.input_shape[1])
    features = features_model(model)
    feature_layers = {id(layer) for layer in features.layers}
    for layer in model.layers:  # SHOT keeps the source hypothesis (the head) fixed
        if id(layer) not in feature_layers:
            layer.trainable = False
    variables = model.trainable_variables
    head = _head(model, features)
    optimizer = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    n = len(class_names)
    ordered = build_dataset(pool, size, batch, n, cache=True)  # fixed order: pseudo-labels line up
    held = build_dataset(heldout, size, batch, n, cache=True) if heldout is not None else None

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            ent = -tf.reduce_mean(tf.reduce_sum(p * tf.math.log(p + 1e-5), axis=1))
            mean = tf.reduce_mean(p, axis=0)
            diversity = tf.reduce_sum(mean * tf.math.log(mean + 1e-5))  # minus the mean's entropy
            ce = -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p + 1e-5), axis=1))
            loss = ent + diversity + beta * ce
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def scores(row: dict) -> dict:
        if held is not None:
            _, p, _ = outputs(held, features, head)
            row.update(entropy=entropy(p), im=information_maximization(p), bnm=bnm(p))
        if target.labelled and "test" in target.splits:
            row["target_test_accuracy"] = evaluate_splits(model, {"t": (target, "test")}, size, batch, 1)["t"]["accuracy"]
        return row

    run_dir = runs.new_run_dir(f"{cfg.name}-shot", out)
    best_path = run_dir / "best.weights.h5"
    history = [scores({"epoch": 0})]
    best = history[0]
    model.save_weights(best_path)
    steps = steps_per_epoch(pool, batch)
    for epoch in range(1, epochs + 1):
        tic = time.time()
        f, p, _ = outputs(ordered, features, head)
        labels = pseudo_labels(f, p)
        agreement = float(np.mean(labels == np.argmax(p, axis=1)))
        train = build_dataset(dataclasses.replace(pool, labels=labels), size, batch, n,
                              training=True, seed=seed + epoch, cache=True)
        losses = [float(step(x, y)) for x, y in train.take(steps)]
        row = scores({"epoch": epoch, "loss": float(np.mean(losses)), "pseudo_label_agreement": agreement})
        history.append(row)
        if selection == "last" or row[selection] > best[selection]:
            best = row
            model.save_weights(best_path)
        if not quiet:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
            echo(f"  [adapt/shot] epoch {epoch}/{epochs}  {shown}  {time.time() - tic:.1f} s")
    model.load_weights(best_path)
    best_path.unlink()

    metrics = evaluate_splits(model, {"target_val": (target, "val"), "target_test": (target, "test")}, size,
                              batch, cfg.train.top_k) if target.labelled else {}
    metrics["adaptation"] = {
        "method": "shot", "source_free": True, "from_run": str(parent), "target": dataset,
        "settings": {"epochs": epochs, "beta": beta, "lr": lr, "batch_size": batch, "seed": seed},
        "selection": {"criterion": selection, "epoch": int(best["epoch"])},
        "epochs": history,
    }
    metrics["distribute"] = {"weights_sha256": weights_digest(model)}
    new_cfg = dataclasses.replace(cfg, name=f"{cfg.name}-shot", seed=seed, source=None, adapt=None, target=section)
    runs.atomic_write(run_dir / runs.CONFIG, dump_config(new_cfg))
    runs.atomic_write(run_dir / runs.LABELS, "\n".join(class_names) + "\n")
    runs.atomic_save(run_dir / runs.MODEL, model.save)
    runs.write_history(run_dir, [{"stage": "adapt", "phase": "shot", **r} for r in history])
    runs.write_json(run_dir / runs.METRICS, metrics)
    report = write_run_report(new_cfg, run_dir, model, None, target) if cfg.train.report else None

    lines = ["", f"kerastl run {run_dir}",
             f"  from     {parent} (source-free: no source image read)",
             f"  trained  SHOT on {target.name} ({len(pool)} unlabelled images), {epochs} epoch(s); kept epoch "
             f"{best['epoch']} by {selection}" + (" (the run as it was)" if best["epoch"] == 0 else ""),
             f"  time     {time.time() - started:.0f} s"]
    if "target_test_accuracy" in history[0]:
        lines.append(f"  target_test  accuracy {history[0]['target_test_accuracy']:.4f} as the run was -> "
                     f"{metrics['target_test']['accuracy']:.4f}  (labels only evaluate)")
    lines.append(f"  saved    {run_dir / runs.MODEL}, {runs.METRICS}, {runs.HISTORY}")
    if report is not None:
        lines.append(f"  report   {report}")
    echo("\n".join(lines))
    return RunResult(run_dir=run_dir, metrics=metrics, history=history, epochs_run=epochs)


def _head(model, features):
    """The layers after the features, as a model on the features (for one pass giving both)."""
    import keras

    inputs = keras.Input(features.output.shape[1:])
    x = inputs
    feature_layers = {id(layer) for layer in features.layers}
    for layer in model.layers:
        if id(layer) not in feature_layers and not isinstance(layer, keras.layers.InputLayer):
            x = layer(x)
    return keras.Model(inputs, x)


def _unlabelled(split):
    """`split`, whose labels the pseudo-labels will replace; checked before the run directory
    is made: a tf.data-held split (a tfds: target, labels travelling with the images) is
    not supported here."""
    if split.dataset is not None:
        raise KerastlError("kerastl adapt reads image folders and built-in datasets; a tfds: target is not "
                           "supported yet")
    return split
