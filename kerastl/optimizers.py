"""Keras' Adam, AdamW and SGD, each variable updated by one fused TensorFlow kernel.

Keras 3's optimizers build every variable's update from about ten small ops (Adam: casts,
two powers, both moments, the step; SGD with momentum: five), and TensorFlow has one kernel
that computes the same formula: `ResourceApplyAdam` (Keras' Adam: m += (g - m)(1 - b1),
v += (g^2 - v)(1 - b2), w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)) and
`ResourceApplyKerasMomentum` (m = momentum m - lr g; w += m, or with Nesterov
w += momentum m - lr g). Tracing the train step builds each of those ops in Python, once
per variable, which makes the first step of a small model with many variables noticeably
slower to start; one kernel per variable is traced much faster and runs the same math.

Besides `update_step`, each optimizer can scale the learning rate per variable (layer-wise
decay) and puts back the weight averages (`use_ema`) of its own variables only (see
`_GroupOptimizer`). The optimizers' variables, their order (the checkpoints), their
config, weight decay (Keras applies it before `update_step`), loss scaling and
tf.distribute's per-device updates are Keras' own. Results equal Keras' to float32
rounding (`tests/test_fused_optimizers.py`), not bit for bit: the kernel computes
1 - beta_1 in float32, Keras in Python floats.

Registered with Keras' serialization, so a model compiled with them saves and loads.
Only for the TensorFlow backend, which kerastl trains on; AMSGrad falls back to Keras' own
update. The slot lists (`_momentums`, `_velocities`, `momentums`), `_get_variable_index`,
`_trainable_variables` and `_overwrite_model_variables_with_average_value` are the ones
Keras' own `update_step` and `finalize_variable_values` use; the tests fail if they move.
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


class _GroupOptimizer:
    """What kerastl's optimizers add to Keras' besides the fused kernels: per-variable
    learning-rate factors (layer-wise decay), and an EMA that belongs to its own variables.

    Keras' `fit` ends by handing the optimizer every trainable weight of the model to
    overwrite with their averages, matched by position; fine-tuning trains the head and the
    backbone with one optimizer each (different rates), so each one puts back the averages
    of the variables it was built with instead."""

    lr_factors = None  # one factor per variable, in the order the optimizer was built with

    def scale_learning_rates(self, factors):
        """Multiplies the learning rate of each variable in `factors` ((variable, factor)
        pairs) by its factor; the others keep 1. Call after `build`."""
        by_id = {id(variable): float(factor) for variable, factor in factors}
        self.lr_factors = [by_id.get(id(variable), 1.0) for variable in self._trainable_variables]

    def _scaled(self, learning_rate, variable):
        if self.lr_factors is None:
            return learning_rate
        factor = self.lr_factors[self._get_variable_index(variable)]
        return learning_rate if factor == 1.0 else learning_rate * factor

    def finalize_variable_values(self, var_list):
        if self.use_ema:
            self._overwrite_model_variables_with_average_value(self._trainable_variables)


class _FusedAdamStep(_GroupOptimizer):
    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._scaled(learning_rate, variable)
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
class SGD(_GroupOptimizer, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with one `ResourceApplyKerasMomentum` per variable when it has
    momentum (plain SGD is one op already)."""

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._scaled(learning_rate, variable)
        if self.momentum == 0:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(self.momentums[self._get_variable_index(variable)]),
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_nesterov=bool(self.nesterov))


def make_optimizer(name: str, learning_rate, weight_decay: float | None = None, ema: float | None = None):
    """`sgd` (Nesterov momentum 0.9), `adam` or `adamw`, with decoupled weight decay.

    weight_decay None: none for sgd and adam, Keras' 0.004 for adamw; 0: none. ema: the
    momentum of Keras' moving average of the weights (`use_ema`), None: none. Keras'
    optimizers, each variable's update done by one fused TensorFlow kernel (below).
    """
    wd = weight_decay or None  # Keras' None: no decay op at all
    averaging = dict(use_ema=True, ema_momentum=ema) if ema else {}
    if name == "sgd":
        return SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=wd, **averaging)
    if name == "adamw":
        return AdamW(learning_rate, weight_decay=0.004 if weight_decay is None else weight_decay, **averaging)
    if name == "adam":
        return Adam(learning_rate, weight_decay=wd, **averaging)
    raise ValueError(f"unknown optimizer {name!r}")
