"""The `adapt` stage: unsupervised domain adaptation from a labelled source.

Batches pair labelled source images with unlabelled target images, half and half; the
shorter domain is repeated. Target labels feed only the `target_accuracy` metric (and the
loss of `target_oracle`, the upper bound), except the few that `target.labels_per_class`
keeps: semi-supervised, those labelled target images (half a batch per step) join the
source in the classification loss, while all target training images stay unlabelled. The model kept is chosen without target labels
(`adapt.selection`), and a 2-D PCA picture of source and target features before and after,
with the proxy A-distance between the domains, is written into the run.
"""

from __future__ import annotations

import logging

import numpy as np

from kerastl import runs
from kerastl.config import DEFAULT_ADAPT_EPOCHS
from kerastl.errors import KerastlError
from kerastl.training.stage import StageContext, StageResult, require_finite

log = logging.getLogger("kerastl")

PHASE = "adapt"


def run(ctx: StageContext) -> StageResult:
    import keras

    from kerastl.adaptation import build_method
    from kerastl.data.pipeline import build_dataset, resolve_cache, paired_dataset, steps_per_epoch
    from kerastl.evaluation.domain_gap import features_of, proxy_a_distance
    from kerastl.models.factory import set_trainable
    from kerastl.optimizers import make_optimizer
    from kerastl.replicas import replicas
    from kerastl.training.recipe import annealed_lr, budget, resolve_bn
    from kerastl.training.bn_stats import recalibrate_on_split
    from kerastl.training.selection import best_epoch_callback
    from kerastl.training.validation import choices, validators_callback

    cfg, classifier, source, target = ctx.cfg, ctx.classifier, ctx.source, ctx.target
    ac = cfg.adapt
    batch, size = cfg.train.batch_size, classifier.input_size
    half = max(batch // 2, 1)
    src_train = source.splits["train"]
    # Semi-supervised (target.labels_per_class): the few labelled target images join the
    # classification loss; every target training image feeds the unlabelled stream.
    tgt_labelled = target.splits["train"] if "pool" in target.splits else None
    tgt_train = target.splits.get("pool", target.splits["train"])
    steps = ac.steps_per_epoch or max(steps_per_epoch(src_train, half), steps_per_epoch(tgt_train, half))
    epochs, steps = budget(ac.epochs or DEFAULT_ADAPT_EPOCHS, steps, ac.steps)
    total = steps * epochs
    set_trainable(classifier.backbone, cfg.model.unfreeze, resolve_bn(cfg, "adapt"))

    schedules = []  # annealed learning rates follow the model's training progress

    def optimizer(lr):
        if ac.anneal:
            lr = annealed_lr(lr, ac.anneal_alpha, ac.anneal_beta)
            schedules.append(lr)
        return make_optimizer(ac.optimizer, lr, ac.weight_decay)

    model = build_method(ac.method, classifier, optimizer(ac.lr),
                         backbone_optimizer=optimizer(ac.lr * ac.backbone_lr_mult) if ac.backbone_lr_mult != 1.0 else None,
                         weight=ac.weight, weight_ramp=ac.weight_ramp, label_smoothing=ac.label_smoothing,
                         total_steps=total, bn_protocol=ac.bn_protocol, target_classes=ctx.target_classes,
                         jit_compile=cfg.train.jit_compile, **ac.params)
    for schedule in schedules:
        schedule.follow(model)
    if getattr(model, "exact_weights", False) and cfg.model.partial_outputs == "source":
        log.warning("adapt.method: pada weighs the classes the target lacks 0, so the saved model's outputs for "
                    "them (model.partial_outputs: source) are not trained; set model.partial_outputs: target, or "
                    "adapt.params.known_classes: false")

    # === Domain distance before ===
    src_eval = source.splits.get("test") or source.splits.get("val") or src_train
    tgt_eval = target.splits.get("test") or tgt_train
    before_path = ctx.run_dir / "features_before.npz"
    initial_epoch = ctx.initial_epoch(PHASE)
    if initial_epoch == 0:  # (a resumed run's model is restored by the checkpoint callback)
        before = (features_of(classifier.features, src_eval, size, batch, source.num_classes),
                  features_of(classifier.features, tgt_eval, size, batch, target.num_classes))
        runs.atomic_save(before_path, lambda path: np.savez(path, source=before[0], target=before[1]))

    # === Data ===
    train_ds = paired_dataset(src_train, tgt_train, size, batch, target.num_classes, cfg.seed,
                              steps, epochs, initial_epoch, (ctx.augmenters["source"], ctx.augmenters["target"]),
                              caches=(resolve_cache(cfg.source, "adapt-source", "train", size, src_train, source.name),
                                      resolve_cache(cfg.target, "adapt-target", "train", size, tgt_train, target.name)),
                              labelled_split=tgt_labelled,
                              labelled_cache=(resolve_cache(cfg.target, "adapt-target", "labelled", size, tgt_labelled, target.name)
                                              if tgt_labelled is not None else True))
    val_split = source.splits.get("val")
    val_ds = (build_dataset(val_split, size, batch, source.num_classes,
                            cache=resolve_cache(cfg.source, "adapt-source", "val", size, val_split, source.name),
                            replicas=replicas())
              if val_split is not None and len(val_split) else None)
    # Held-back target images for the label-free validators: the target validation split
    # (its labels are not read); the target test split only measures each epoch.
    heldout = target.splits.get("val")
    validators = None
    if val_ds is not None and heldout is not None and len(heldout) > 1:
        validators = validators_callback(classifier, val_split, heldout, target.splits.get("test"),
                                         batch=batch, num_classes=target.num_classes, seed=cfg.seed,
                                         target_classes=ctx.target_classes)
    selection = ac.selection
    if selection == "auto":
        selection = "im" if validators is not None else "source_val" if val_ds is not None else "last"
    if selection == "source_val" and val_ds is None:
        log.warning("adapt.selection: source_val needs a source validation split and %s has none "
                    "(source.val_fraction is 0); keeping the last epoch", source.name)
        selection = "last (no source validation split)"
    elif selection not in ("source_val", "last") and validators is None:
        have = (f"source validation images: {len(val_split) if val_split is not None else 0} "
                f"(source.val_fraction {cfg.source.val_fraction}), held-back target images: "
                f"{len(heldout) if heldout is not None else 0} (target.val_fraction {cfg.target.val_fraction})")
        raise KerastlError(f"adapt.selection: {selection} needs a source validation split and at least 2 "
                           f"held-back target images ({have}): raise the fractions, add images, or use "
                           "adapt.selection: source_val or last")

    # === Train ===
    callbacks = [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: warn_on_collapse(logs, target.num_classes, epoch))]
    best = None
    if not selection.startswith("last"):
        monitor = "val_accuracy" if selection == "source_val" else f"validator_{selection}"
        best = best_epoch_callback(classifier.model, ctx.checkpoint.dir / "best-classifier.weights.h5",
                                   monitor, ctx.saved(PHASE, "best"))
        callbacks.insert(0, best)
    if validators is not None:
        callbacks.insert(0, validators)  # before the best-epoch callback reads its logs
    target_text = f"{target.name} ({len(tgt_train)} unlabelled" + (
        f", {len(tgt_labelled)} of them labelled)" if tgt_labelled is not None else ")")
    ctx.announce(f"== adapt: {ac.method}, {epochs} epoch(s) x {steps} steps, source {source.name} "
                 f"({len(src_train)} labelled) -> target {target_text}")
    ctx.fit(model, train_ds, val_ds, phase=PHASE, label=("adapt", ac.method), epochs=epochs, steps=steps,
            callbacks=callbacks, extra_state=lambda: {"best": best.best if best else {}})
    require_finite(ctx, f"lower adapt.lr (now {ac.lr}) or adapt.weight (now {ac.weight})")
    selected = (best.restore() if best else None) or epochs
    adabn = None
    if model.recalibrates_bn:
        adabn = {"target_batches": recalibrate_on_split(classifier.features, tgt_train, size, batch, target.num_classes),
                 "target_images": len(tgt_train)}
        ctx.announce(f"== AdaBN: BatchNormalization statistics re-estimated on {len(tgt_train)} target images")

    # === Domain distance after ===
    after = (features_of(classifier.features, src_eval, size, batch, source.num_classes),
             features_of(classifier.features, tgt_eval, size, batch, target.num_classes))
    report = {
        "method": ac.method,
        "selection": {"criterion": selection, "epoch": selected,
                      "score": best.best.get("score") if best else None},
        # Each validator's choice of epoch and, for comparison, the target test accuracy there.
        "validators": choices([r for r in ctx.history if r.get("stage") == "adapt"]),
        "proxy_a_distance_after": proxy_a_distance(*after, seed=cfg.seed),
        "bn_protocol": ac.bn_protocol,
        "weight_ramp": ac.weight_ramp,
        "label_smoothing": ac.label_smoothing,
        "budget": {"epochs": epochs, "steps_per_epoch": steps, "steps": total},
        "labelled_target_images": len(tgt_labelled) if tgt_labelled is not None else 0,
    }
    if adabn is not None:
        report["adabn"] = adabn
    if before_path.exists():  # (report.html pictures both, from this file and the saved model)
        with np.load(before_path) as f:
            report["proxy_a_distance_before"] = proxy_a_distance(f["source"], f["target"], seed=cfg.seed)

    return StageResult(
        trained=f"adapt ({ac.method}) {source.name} ({len(src_train)} labelled) -> {target_text}",
        report=report,
        lines=[f"  adapted  {ac.method}; kept epoch {selected} by {selection}"
               + (f"; AdaBN on {adabn['target_images']} target images" if adabn else "") + "; proxy A-distance "
               f"{report.get('proxy_a_distance_before', float('nan')):.2f} -> "
               f"{report['proxy_a_distance_after']:.2f}"],
    )


def warn_on_collapse(logs: dict, num_classes: int, epoch: int):
    """Warns when most target predictions fall in one class once the source is learned."""
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
