"""The `adapt` stage: unsupervised domain adaptation from a labelled source.

Batches pair labelled source images with unlabelled target images, half and half; the
shorter domain is repeated. Target labels feed only the `target_accuracy` metric (and the
loss of `target_oracle`, the upper bound). The model kept is chosen without target labels
(`adapt.selection`), and a 2-D PCA picture of source and target features before and after,
with the proxy A-distance between the domains, is written into the run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError

log = logging.getLogger("kerastl")


def paired_dataset(source_split, target_split, size, batch, num_classes, seed, steps,
                   epochs, initial_epoch, augmenters, caches=(True, True)):
    """((xs, ys), (xt, yt)) batches of batch/2 + batch/2, `epochs * steps` of them."""
    import tensorflow as tf

    from kerastl.data.pipeline import build_dataset, steps_per_epoch

    half = max(batch // 2, 1)
    total = steps * epochs
    parts = []
    for i, (split, augmenter, cache) in enumerate(zip((source_split, target_split), augmenters, caches)):
        per_epoch = steps_per_epoch(split, half)
        needed = math.ceil(total / per_epoch)
        parts.append(build_dataset(split, size, half, num_classes, training=True, cache=cache,
                                   seed=seed * 7 + i, augmenter=augmenter, epochs=needed))
    ds = tf.data.Dataset.zip(tuple(parts)).take(total)
    return ds.skip(initial_epoch * steps).prefetch(tf.data.AUTOTUNE)


def adapt(cfg, run_dir: Path, source, target, classifier, size, checkpoint, state, history,
          augmenters: dict, quiet: bool, echo, verbosity: int, jit_compile: bool) -> dict:
    """Trains `classifier` by `cfg.adapt.method`; returns what metrics.json reports of it."""
    import keras

    from kerastl.adaptation import ProgressCallback, build_method
    from kerastl.adaptation.base import split_classifier
    from kerastl.data.pipeline import build_dataset, cache_path, steps_per_epoch
    from kerastl.evaluation.domain_gap import draw_embedding, features_of, proxy_a_distance
    from kerastl.models.factory import set_trainable
    from kerastl.training.checkpoint import checkpoint_callback
    from kerastl.training.recipe import annealed_lr, make_optimizer, resolve_bn

    ac = cfg.adapt
    batch = cfg.train.batch_size
    half = max(batch // 2, 1)
    src_train, tgt_train = source.splits["train"], target.splits["train"]
    steps = ac.steps_per_epoch or max(steps_per_epoch(src_train, half), steps_per_epoch(tgt_train, half))
    total = steps * ac.epochs
    set_trainable(classifier, cfg.model.unfreeze, resolve_bn(cfg, "adapt"))

    lr = annealed_lr(ac.lr, total, ac.anneal_alpha, ac.anneal_beta) if ac.anneal else ac.lr
    model = build_method(ac.method, classifier, make_optimizer(ac.optimizer, lr), weight=ac.weight,
                         total_steps=total, jit_compile=jit_compile, **ac.params)

    features, _ = split_classifier(classifier)
    src_eval = source.splits.get("test") or source.splits.get("val") or src_train
    tgt_eval = target.splits.get("test") or tgt_train
    before = None
    in_progress = state is not None and state.get("phase") == "adapt"
    initial_epoch = state["epoch"] + 1 if in_progress else 0
    if not in_progress:  # (a resumed run's model is restored by the checkpoint callback)
        before = (features_of(features, src_eval, size, batch, source.num_classes),
                  features_of(features, tgt_eval, size, batch, target.num_classes))
        runs.atomic_save(run_dir / "features_before.npz",
                         lambda path: np.savez(path, source=before[0], target=before[1]))

    train_ds = paired_dataset(src_train, tgt_train, size, batch, target.num_classes, cfg.seed,
                              steps, ac.epochs, initial_epoch, (augmenters["source"], augmenters["target"]),
                              caches=(cache_path(cfg.source.cache, "adapt-source", "train", size),
                                      cache_path(cfg.target.cache, "adapt-target", "train", size)))
    val_split = source.splits.get("val")
    if val_split is not None and not len(val_split):
        val_split = None
    val_ds = (build_dataset(val_split, size, batch, source.num_classes,
                            cache=cache_path(cfg.source.cache, "adapt-source", "val", size))
              if val_split is not None else None)
    selection = ac.selection
    if selection == "source_val" and val_ds is None:
        log.warning("adapt.selection: source_val needs a source validation split and %s has none "
                    "(source.val_fraction is 0); keeping the last epoch", source.name)
        selection = "last (no source validation split)"

    best = dict(state.get("best", {})) if in_progress else {}
    best_path = checkpoint.dir / "best-classifier.weights.h5"

    def on_epoch_end(epoch, logs):
        logs = {k: float(v) for k, v in logs.items()}
        if not all(np.isfinite(v) for v in logs.values()):
            return  # TerminateOnNaN stops the run; the check after fit explains
        score = logs["val_accuracy"] if selection == "source_val" else None
        if selection == "source_val" and score > best.get("score", -np.inf):
            runs.atomic_save(best_path, classifier.save_weights)
            best.update(score=score, epoch=epoch + 1)
        _warn_on_collapse(logs, target.num_classes, epoch)
        row = {"stage": "adapt", "phase": ac.method, "epoch": epoch + 1, **logs}
        history.append(row)
        runs.write_history(run_dir, history)

    def state_of(epoch):
        return {"phase": "adapt", "epoch": epoch, "done": [], "history": history, "best": best}

    if not quiet:
        echo(f"== adapt: {ac.method}, {ac.epochs} epoch(s) x {steps} steps, source {source.name} "
             f"({len(src_train)} labelled) -> target {target.name} ({len(tgt_train)} unlabelled)")
    if initial_epoch < ac.epochs:
        from kerastl.training.distribute import shard_by_data

        model.fit(
            shard_by_data(train_ds), epochs=ac.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
            validation_data=shard_by_data(val_ds), verbose=verbosity, shuffle=False,
            callbacks=[ProgressCallback(initial_epoch * steps),
                       keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end),
                       checkpoint_callback(checkpoint, classifier, "adapt", state_of),
                       keras.callbacks.TensorBoard(str(run_dir / "logs" / "adapt")),
                       keras.callbacks.TerminateOnNaN()],
        )
        last = history[-1] if history and history[-1].get("stage") == "adapt" else {}
        if not history or len([h for h in history if h.get("stage") == "adapt"]) < ac.epochs:
            raise KerastlError(
                f"adaptation with {ac.method} diverged (a loss became NaN) and was stopped; "
                f"lower adapt.lr (now {ac.lr}) or adapt.weight (now {ac.weight})"
                + (f"; last logs: {last}" if last else "")
            )

    selected = ac.epochs
    if selection == "source_val" and best_path.exists():
        classifier.load_weights(best_path)
        selected = best["epoch"]

    after = (features_of(features, src_eval, size, batch, source.num_classes),
             features_of(features, tgt_eval, size, batch, target.num_classes))
    if before is None and (run_dir / "features_before.npz").exists():
        with np.load(run_dir / "features_before.npz") as f:
            before = (f["source"], f["target"])
    report = {
        "method": ac.method,
        "selection": {"criterion": selection, "epoch": selected,
                      "source_val_accuracy": best.get("score")},
        "proxy_a_distance_after": proxy_a_distance(*after, seed=cfg.seed),
    }
    panels = []
    if before is not None:
        report["proxy_a_distance_before"] = proxy_a_distance(*before, seed=cfg.seed)
        panels.append((f"before: PAD {report['proxy_a_distance_before']:.2f}", *before))
    panels.append((f"after {ac.method}: PAD {report['proxy_a_distance_after']:.2f}", *after))
    draw_embedding(run_dir / "embedding.png", panels)
    return report


def _warn_on_collapse(logs: dict, num_classes: int, epoch: int):
    share = logs.get("target_top_class_share")
    dacc = logs.get("domain_accuracy")
    # Only once the source is learned: an untrained model predicts one class anyway.
    if logs.get("source_accuracy", 0.0) > 0.5 and share is not None and share > max(0.5, 3.0 / num_classes):
        pinned = f" with the domain discriminator at {dacc:.2f}" if dacc is not None else ""
        log.warning(
            "epoch %d: %.0f%% of target predictions fall in one class%s: adaptation may be "
            "collapsing (lower adapt.weight or the method's max_lambda)",
            epoch + 1, 100 * share, pinned,
        )
