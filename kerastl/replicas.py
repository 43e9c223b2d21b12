"""One replica's view of tf.distribute, for the training steps of fine-tuning and of every
adaptation method: how many replicas there are, float16 loss scaling, and the update that
applies one loss to several (optimizer, variables) groups. No strategy is made here
(`training/distribute.py` makes them); a step only asks the one it runs under.
"""

from __future__ import annotations


def replicas() -> int:
    """Replicas in sync under the current strategy (1 outside any)."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def loss_scaled(optimizer):
    """`optimizer`, wrapped for float16 loss scaling under the mixed_float16 policy.

    Keras' `compile()` wraps the optimizer it is given; an optimizer it never sees (the
    backbone's second one, WDGRL's critic) needs this.
    """
    import keras

    if (keras.mixed_precision.global_policy().name == "mixed_float16"
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def apply_scaled(loss_fn, groups):
    """One update of several (optimizer, variables) groups from one loss.

    `loss_fn()` returns (this replica's share of the loss, aux), computed under one tape;
    each group's optimizer scales the loss by its own float16 factor and applies its
    gradient to its variables (empty groups are skipped). The two-optimizer steps of
    fine-tuning (`TransferModel`) and adaptation (`AdaptationModel.minimize`) both use it.
    Returns (loss, aux).
    """
    import tensorflow as tf

    # Persistent with two optimizers: each scales the loss by its own factor.
    with tf.GradientTape(persistent=len(groups) > 1) as tape:
        loss, aux = loss_fn()
        scaled = [optimizer.scale_loss(loss) for optimizer, _ in groups]
    for (optimizer, variables), group_loss in zip(groups, scaled):
        if variables:
            optimizer.apply(tape.gradient(group_loss, variables), variables)
    del tape
    return loss, aux
