"""The fused optimizers (`kerastl.optimizers`) update like Keras' own."""

from __future__ import annotations

import numpy as np
import pytest

CASES = {
    "adam": ("Adam", {}),
    "adam_decay": ("Adam", {"weight_decay": 0.01}),
    "adamw": ("AdamW", {"weight_decay": 0.004}),
    "sgd_nesterov": ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    "sgd_momentum": ("SGD", {"momentum": 0.9}),
    "sgd_plain": ("SGD", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_update_equals_keras(case):
    import keras
    import tensorflow as tf

    from kerastl import optimizers as fused

    name, kwargs = CASES[case]
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 4, 8), (8,), (17, 5)]
    start = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(6)]
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)

    def train(optimizer):
        variables = [keras.Variable(w) for w in start]
        optimizer.build(variables)
        step = tf.function(lambda g: optimizer.apply(g, variables))
        for g in grads:
            step([tf.constant(x) for x in g])
        return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables]

    ours, ours_slots = train(getattr(fused, name)(schedule, **kwargs))
    theirs, their_slots = train(getattr(keras.optimizers, name)(schedule, **kwargs))
    for a, b in zip(ours + ours_slots, theirs + their_slots):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    # The update did something: six steps of lr ~0.05 move every weight.
    assert all(np.abs(a - w).max() > 1e-3 for a, w in zip(ours, start))


def test_fused_optimizers_serialize_as_themselves():
    import keras

    from kerastl import optimizers as fused

    for cls in (fused.Adam, fused.AdamW, fused.SGD):
        optimizer = cls(0.01)
        back = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(back) is cls and back.get_config() == optimizer.get_config()
