"""Keras' Adam, AdamW and SGD, each variable updated by one fused TensorFlow kernel.

Keras 3's optimizers build every variable's update from about ten small ops (Adam: casts,
two powers, both moments, the step; SGD with momentum: five), and TensorFlow has one kernel
that computes the same formula: `ResourceApplyAdam` (Keras' Adam: m += (g - m)(1 - b1),
v += (g^2 - v)(1 - b2), w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)) and
`ResourceApplyKerasMomentum` (m = momentum m - lr g; w += m, or with Nesterov
w += momentum m - lr g). Tracing the train step builds each of those ops in Python, once
per variable, which makes the first step of a small model with many variables noticeably
slower to start; one kernel per variable is traced much faster and runs the same math.

Only `update_step` changes: the optimizers' variables, their order (the checkpoints), their
config, weight decay (Keras applies it before `update_step`), loss scaling and
tf.distribute's per-device updates are Keras' own. Results equal Keras' to float32
rounding (`tests/test_fused_optimizers.py`), not bit for bit: the kernel computes
1 - beta_1 in float32, Keras in Python floats.

Registered with Keras' serialization, so a model compiled with them saves and loads.
Only for the TensorFlow backend, which kerastl trains on; AMSGrad falls back to Keras' own
update. The slot lists (`_momentums`, `_velocities`, `momentums`) and `_get_variable_index`
are the ones Keras' own `update_step` reads; the test above fails if they move.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _handle(variable):
    """The resource handle of a tf.Variable, or of a Keras variable's tf.Variable. Inside
    tf.distribute's update call a distributed variable gives its current device's."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


class _FusedAdamStep:
    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


@keras.saving.register_keras_serializable(package="kerastl")
class Adam(_FusedAdamStep, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with one `ResourceApplyAdam` per variable."""


@keras.saving.register_keras_serializable(package="kerastl")
class AdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` (decoupled weight decay, applied by Keras before the update)
    with one `ResourceApplyAdam` per variable."""


@keras.saving.register_keras_serializable(package="kerastl")
class SGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with one `ResourceApplyKerasMomentum` per variable when it has
    momentum (plain SGD is one op already)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(self.momentums[self._get_variable_index(variable)]),
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_nesterov=bool(self.nesterov))


def make_optimizer(name: str, learning_rate, weight_decay: float | None = None):
    """`sgd` (Nesterov momentum 0.9), `adam` or `adamw`, with decoupled weight decay.

    weight_decay None: none for sgd and adam, Keras' 0.004 for adamw; 0: none. Keras'
    optimizers, each variable's update done by one fused TensorFlow kernel (below).
    """
    wd = weight_decay or None  # Keras' None: no decay op at all
    if name == "sgd":
        return SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=wd)
    if name == "adamw":
        return AdamW(learning_rate, weight_decay=0.004 if weight_decay is None else weight_decay)
    if name == "adam":
        return Adam(learning_rate, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")
