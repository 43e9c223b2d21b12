"""Custom layers, each serializable (`get_config` round-trips)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kerastl")
class GradientReversal(keras.layers.Layer):
    """Identity on the forward pass; multiplies the gradient by `-coefficient` going back.

    The gradient reversal layer of DANN (Ganin & Lempitsky, "Unsupervised Domain
    Adaptation by Backpropagation", ICML 2015). `coefficient` (lambda) is a non-trainable
    variable, so a callback can change it during training without retracing.

    Args:
        coefficient: initial lambda.
    """

    def __init__(self, coefficient: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_coefficient = float(coefficient)
        self.coefficient = self.add_weight(
            name="coefficient",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_coefficient),
            trainable=False,
        )
        # Its only state is made above, whatever the input shape: built from the start, so
        # Keras never tries to build the model around it from a data batch.
        self.built = True

    def call(self, inputs):
        coefficient = tf.cast(self.coefficient, inputs.dtype)

        @tf.custom_gradient
        def reverse(x):
            def grad(upstream):
                return -coefficient * upstream

            return tf.identity(x), grad

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "coefficient": self.initial_coefficient}
