"""The fine-tuning model: a classifier trained with its own learning rate for the backbone."""

from __future__ import annotations

import keras

from kerastl.replicas import apply_scaled, loss_scaled, replicas


class TransferModel(keras.Model):
    """Wraps a classifier; trains backbone and head with separate optimizers.

    Keras optimizers have one learning rate for all variables. Fine-tuning wants a lower
    one for the pretrained backbone than for the new head (a per-group learning-rate
    multiplier), so `compile` takes a second optimizer for the backbone's variables.
    Only the wrapped `classifier` is saved as the run's model.

    Two regularizers of fine-tuning act in the train step, each added to the loss:

    - L2-SP (Li et al., 2018): `l2_sp / 2 * sum ||w - w0||^2` over the backbone's trained
      weights, w0 their values when the phase was compiled (`anchor()` sets them again
      for a phase that reuses this model). The start values are variables of this model,
      so a resumed run's checkpoint brings them back.
    - Batch spectral shrinkage (Chen et al., 2019): `bss * s_min^2`, the smallest singular
      value of the batch's feature matrix (TLlib's k = 1).

    Args:
        classifier: a `Classifier` handle from `models.factory`.
        l2_sp: weight of L2-SP; 0: off.
        bss: weight of batch spectral shrinkage; 0: off.
        on_features: the model trains the head on features computed beforehand (its
            inputs are the features).
    """

    def __init__(self, classifier, *, l2_sp: float = 0.0, bss: float = 0.0, on_features: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier.model
        self.backbone = classifier.backbone
        self.features = None if on_features else classifier.features
        self.head = classifier.head
        self.l2_sp, self.bss = float(l2_sp), float(bss)
        self.backbone_optimizer = None
        self._backbone_ids: set[int] = set()
        self._anchored: list = []  # (backbone variable, its start value)

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def compile(self, optimizer, backbone_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if backbone_optimizer is not None:
            backbone_optimizer = loss_scaled(backbone_optimizer)  # compile() wrapped only `optimizer`
        self.backbone_optimizer = backbone_optimizer
        head, backbone = self.variable_groups()
        self._backbone_ids = {id(v) for v in backbone}
        # Build before fit: optimizers refuse variables they were not built with.
        if backbone_optimizer is None:
            self.optimizer.build(head + backbone)
        else:
            self.optimizer.build(head)
            backbone_optimizer.build(backbone)
        if self.l2_sp and not self._anchored:
            self._anchored = [(v, keras.Variable(keras.ops.copy(v), trainable=False, name=f"start_{i}"))
                              for i, v in enumerate(backbone)]

    def anchor(self):
        """L2-SP's start values := the backbone's weights now (a phase's start)."""
        for variable, start in self._anchored:
            start.assign(keras.ops.copy(variable))

    def regularization(self, features):
        """The regularizers' part of the loss for a batch whose features are `features`."""
        import tensorflow as tf

        terms = []
        if self._anchored:
            terms.append(0.5 * self.l2_sp * tf.add_n([tf.reduce_sum(tf.square(v.value - start.value))
                                                       for v, start in self._anchored]))
        if self.bss:
            singular = tf.linalg.svd(tf.cast(features, tf.float32), compute_uv=False)  # descending
            terms.append(self.bss * tf.square(singular[-1]))
        return tf.add_n(terms) if terms else None

    def variable_groups(self):
        """(head variables, backbone variables) among the trainable ones."""
        backbone_ids = {id(v) for v in self.backbone.trainable_variables}
        head = [v for v in self.trainable_variables if id(v) not in backbone_ids]
        backbone = [v for v in self.trainable_variables if id(v) in backbone_ids]
        return head, backbone

    def optimizers(self):
        return [o for o in (self.optimizer, self.backbone_optimizer) if o is not None]

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.backbone_optimizer is None:
            groups = [(self.optimizer, self.trainable_variables)]
        else:
            groups = [(self.optimizer, [v for v in self.trainable_variables if id(v) not in self._backbone_ids]),
                      (self.backbone_optimizer, [v for v in self.trainable_variables if id(v) in self._backbone_ids])]

        def loss_fn():
            if self.bss:
                features = x if self.features is None else self.features(x, training=True)
                y_pred = self.head(features, training=True)
            else:
                features, y_pred = None, self(x, training=True)
            # Under a strategy Keras divides the loss by the number of replicas, so that
            # the gradients summed over replicas are those of the global batch's mean.
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            extra = self.regularization(features)
            if extra is not None:
                loss = loss + keras.ops.cast(extra, loss.dtype) / replicas()
            return loss, y_pred

        loss, y_pred = apply_scaled(loss_fn, groups)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas())  # the loss of the global batch, for the logs
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
