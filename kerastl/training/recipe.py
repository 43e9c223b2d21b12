"""The training recipe every stage shares: the BatchNormalization rule, optimizers and
learning-rate schedules. One place, so fine-tuning, adaptation and WDGRL's critic cannot
drift apart."""

from __future__ import annotations


def resolve_bn(cfg, stage: str) -> str:
    """`model.bn` for a stage (pretrain, finetune or adapt) whose backbone trains.

    `auto` keeps the BatchNormalization statistics of a pretrained backbone frozen
    (inference mode): a few small batches of a new domain would overwrite statistics
    estimated on far more data, and frozen BN is what fine-tuning recipes for
    keras.applications do. From scratch (`weights: none`, and no pretraining stage before
    fine-tuning), BN must learn its statistics, so it trains.
    """
    if cfg.model.bn != "auto":
        return cfg.model.bn
    pretrained = cfg.model.weights.lower() != "none" or (stage == "finetune" and cfg.source is not None)
    return "frozen" if pretrained else "train"


def make_schedule(lr: float, steps: int, warmup_steps: int):
    """Linear warmup to `lr` over `warmup_steps`, then cosine decay to 0 at `steps`.

    On one device: a `WarmupCosine` (numbers in variables, resettable, so fine-tuning can
    reuse a traced step). With several replicas: Keras' CosineDecay, constants only, so no
    extra variables are created (and broadcast between workers) under the strategy."""
    import keras
    import tensorflow as tf

    from kerastl.training.schedules import WarmupCosine, warmup_bounds

    if tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return WarmupCosine(lr, steps, warmup_steps)
    steps, warmup_steps = warmup_bounds(steps, warmup_steps)
    if warmup_steps > 0:
        return keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0, decay_steps=steps - warmup_steps,
                                                      warmup_target=lr, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=lr, decay_steps=steps)


def budget(epochs: int, steps_per_epoch: int, steps: int | None) -> tuple[int, int]:
    """(epochs, steps per epoch) of a run: as given, or, with a budget of `steps` training
    steps, whole epochs of about `steps_per_epoch` steps that add up to at most `steps`
    (fewer by less than one step per epoch)."""
    if not steps:
        return epochs, steps_per_epoch
    epochs = max(1, round(steps / steps_per_epoch))
    return epochs, steps // epochs


def annealed_lr(lr: float, alpha: float, beta: float):
    """mu_p = mu_0 / (1 + alpha p)^beta (Ganin & Lempitsky, 2015), p the training progress.

    p is read from the model the schedule follows (`schedule.follow(model)`: its step
    counter), not from the optimizer's update count: a method that applies several updates
    per training step (MCD, WDGRL's critic) must not run through its schedule faster.
    """
    import keras

    class Annealed(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self):
            self.model = None

        def follow(self, model):
            """Drives the schedule by `model.progress` (an `AdaptationModel`'s)."""
            self.model = model
            return self

        def __call__(self, step):
            if self.model is None:
                raise RuntimeError("annealed_lr: call .follow(model) before training")
            return lr / keras.ops.power(1.0 + alpha * self.model.progress, beta)

        def get_config(self):
            return {"lr": lr, "alpha": alpha, "beta": beta}

    return Annealed()
