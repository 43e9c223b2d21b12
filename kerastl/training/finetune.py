"""The `finetune` stage: supervised transfer, optionally after pretraining on a source.

A list of phases, each one `model.fit` call:

    pretrain/head, pretrain/full   (only when `source` is given)
    finetune/head, finetune/full

`head` trains the new head with the backbone frozen; `full` unfreezes the backbone as
`model.unfreeze` says, with the backbone's learning rate scaled by `backbone_lr_mult`.
Each phase has fresh optimizers and its own warmup + cosine schedule.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from kerastl.training.stage import StageContext, StageResult, require_finite


@dataclass
class Phase:
    stage: str  # pretrain | finetune
    name: str  # head | full
    epochs: int
    policy: object  # "frozen" or model.unfreeze

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"


def plan_phases(cfg) -> list[Phase]:
    """The phases of a run without an `adapt` section, in order (empty ones left out)."""
    phases = []
    stages = ([("pretrain", cfg.train.pretrain)] if cfg.source is not None else []) + [
        ("finetune", cfg.train.finetune)
    ]
    for stage, st in stages:
        if st.head_epochs:
            phases.append(Phase(stage, "head", st.head_epochs, "frozen"))
        if st.epochs:
            phases.append(Phase(stage, "full", st.epochs, cfg.model.unfreeze))
    return phases


@dataclass
class _Compiled:
    """A phase's compiled model, kept for the next phase when that one trains the same
    variables with the same kind of optimizer and loss: the next phase then resets the
    optimizers to their initial state and the schedules to its own numbers, and Keras'
    traced train and validation steps serve again instead of being traced anew. The weights
    come out bit for bit as with a fresh model and optimizers (tested)."""

    key: tuple
    model: object
    optimizers: list
    initial: list  # each optimizer's variable values right after it was built
    schedules: list


def run(ctx: StageContext) -> StageResult:
    from kerastl.data.pipeline import steps_per_epoch
    from kerastl.training.bn_stats import precise_bn

    compiled = None
    phases = plan_phases(ctx.cfg)
    for index, phase in enumerate(phases):
        if phase.key not in ctx.done:
            compiled = _run_phase(ctx, index, phase, compiled)
    source, target = ctx.source, ctx.target
    # The BN layers still trainable trained at least through the last phase (a fine-tuning
    # phase: fine-tuning always has one).
    updates = phases[-1].epochs * steps_per_epoch(target.splits["train"], ctx.cfg.train.batch_size)
    line = precise_bn(ctx, target.splits["train"], updates)
    return StageResult(
        trained=(f"pretrain on {source.name} ({len(source.splits['train'])} images), " if source else "")
        + f"finetune on {target.name} ({len(target.splits['train'])} images)",
        lines=[line] if line else [])


def _run_phase(ctx: StageContext, index: int, phase: Phase, previous: _Compiled | None) -> _Compiled:
    import keras

    from kerastl.data.pipeline import build_dataset, resolve_cache, class_weights, steps_per_epoch
    from kerastl.evaluation.domain_gap import features_of
    from kerastl.models.factory import set_trainable
    from kerastl.replicas import replicas
    from kerastl.optimizers import make_optimizer
    from kerastl.training.recipe import make_schedule, resolve_bn

    cfg, classifier = ctx.cfg, ctx.classifier
    on_source = phase.stage == "pretrain"
    domain = ctx.source if on_source else ctx.target
    data_cfg = cfg.source if on_source else cfg.target
    st = getattr(cfg.train, phase.stage)
    batch, size = cfg.train.batch_size, classifier.input_size
    train_split, val_split = domain.splits["train"], domain.splits.get("val")
    steps = steps_per_epoch(train_split, batch)
    bn = resolve_bn(cfg, phase.stage)
    set_trainable(classifier.backbone, phase.policy, bn)

    initial_epoch = ctx.initial_epoch(phase.key)
    augmenter = ctx.augmenters["source" if on_source else "target"]
    cached = initial_epoch < phase.epochs and frozen_features_apply(cfg, classifier, phase, augmenter)
    features = {}
    if cached:
        start = time.perf_counter()
        # Every image, in order, in inference mode (the frozen BN's).
        features = {name: features_of(classifier.features, split, size, batch, domain.num_classes, limit=len(split))
                    for name, split in (("train", train_split), ("val", val_split))
                    if split is not None and len(split)}
        ctx.announce(f"   backbone frozen, no augmentation: its features of {sum(map(len, features.values())):,} "
                     f"images computed once ({time.perf_counter() - start:.1f} s); the head trains on them")
    train_ds = build_dataset(
        train_split, size, batch, domain.num_classes, training=True, seed=cfg.seed * 31 + index,
        augmenter=augmenter,
        cache=resolve_cache(data_cfg, phase.stage, "train", size, train_split, domain.name), epochs=phase.epochs,
        initial_epoch=initial_epoch,
        weights=class_weights(train_split.labels, domain.num_classes) if st.class_weights else None,
        features=features.get("train"),
    )
    val_ds = (build_dataset(val_split, size, batch, domain.num_classes,
                            cache=resolve_cache(data_cfg, phase.stage, "val", size, val_split, domain.name), features=features.get("val"),
                            replicas=replicas())
              if val_split is not None and len(val_split) else None)

    total = steps * phase.epochs
    warmup = int(round(st.warmup_epochs * steps))
    two_rates = phase.name == "full" and st.backbone_lr_mult != 1.0
    rates = [st.lr] + ([st.lr * st.backbone_lr_mult] if two_rates else [])
    key = (repr(phase.policy), bn, st.optimizer, st.weight_decay, two_rates, st.label_smoothing,
           st.class_weights, cached, st.ema, st.layer_decay, st.l2_sp, st.bss)
    resettable = previous is not None and all(hasattr(s, "reset") for s in previous.schedules)
    if previous is not None and previous.key == key and resettable:
        compiled = previous
        for optimizer, values in zip(compiled.optimizers, compiled.initial):
            for variable, value in zip(optimizer.variables, values):
                variable.assign(value)
        for schedule, lr in zip(compiled.schedules, rates):
            schedule.reset(lr, total, warmup)
        compiled.model.anchor()
    else:
        from kerastl.training.transfer_model import TransferModel

        schedules = [make_schedule(lr, total, warmup) for lr in rates]
        optimizers = [make_optimizer(st.optimizer, schedule, st.weight_decay, ema=st.ema) for schedule in schedules]
        # On cached features the model trained is the head alone (it shares its layers
        # with the classifier, which the checkpoints save).
        model = TransferModel(dataclasses.replace(classifier, model=classifier.head) if cached else classifier,
                              l2_sp=st.l2_sp if phase.name == "full" else 0.0, bss=st.bss, on_features=cached)
        model.compile(
            optimizer=optimizers[0],
            backbone_optimizer=optimizers[1] if two_rates else None,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=st.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=cfg.train.jit_compile,
        )
        built = model.optimizers()  # as compile wrapped them (loss scaling)
        if st.layer_decay and phase.name == "full":
            from kerastl.models.blocks import layer_decay_factors

            inner = getattr(built[-1], "inner_optimizer", built[-1])  # the backbone's (or the only) one
            inner.scale_learning_rates(layer_decay_factors(classifier.backbone, classifier.spec.family, st.layer_decay))
        compiled = _Compiled(key, model, built, [[v.numpy() for v in o.variables] for o in built], schedules)
    if initial_epoch < phase.epochs:
        trainable = sum(int(np.prod(v.shape)) for v in classifier.model.trainable_variables)
        ctx.announce(f"== {phase.key}: {phase.epochs} epoch(s) on {domain.name} ({len(train_split)} images), "
                     f"{trainable:,} trainable parameters"
                     + (f", resuming at epoch {initial_epoch + 1}" if initial_epoch else ""))
    ctx.fit(compiled.model, train_ds, val_ds, phase=phase.key, label=(phase.stage, phase.name),
            epochs=phase.epochs, steps=steps, min_steps=cfg.train.eval_every_steps,
            callbacks=[averaged_at_end()] if st.ema else [])
    require_finite(ctx, f"lower train.{phase.stage}.lr (now {st.lr})")
    return compiled


def frozen_features_apply(cfg, classifier, phase: Phase, augmenter) -> bool:
    """Whether a phase may train its head on the backbone's features computed once: the
    backbone is frozen (Keras then runs its BatchNormalization in inference mode), no
    augmentation changes the images between epochs, nothing random runs inside the
    backbone (dropout, noise), no bottleneck trains between backbone and head, and the
    run is on one device (distributed runs keep the image pipeline)."""
    import keras

    from kerastl.replicas import replicas

    if not (cfg.train.cache_features and phase.policy == "frozen" and augmenter is None and replicas() == 1):
        return False
    if any(layer.name == "bottleneck" for layer in classifier.model.layers):
        return False
    stochastic = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
              keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
              keras.layers.AlphaDropout)

    def layers(model):
        for layer in model.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from layers(layer)

    return not any(isinstance(layer, stochastic) and getattr(layer, "rate", 1.0) != 0
                   for layer in layers(classifier.model) if layer not in classifier.head.layers)


def averaged_at_end():
    """A callback: at the end of a phase's last epoch, before its checkpoint commit, every
    optimizer puts the moving averages of its variables in their place (`train.*.ema`), so
    the checkpoint, the evaluation and the saved model all hold the averaged weights."""
    import keras

    class AveragedAtEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == self.params["epochs"]:
                for optimizer in self.model.optimizers():
                    optimizer.finalize_variable_values(None)

    return AveragedAtEnd()
