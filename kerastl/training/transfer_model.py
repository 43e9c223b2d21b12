"""The fine-tuning model: a classifier trained with its own learning rate for the backbone."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.models.factory import get_backbone


class TransferModel(keras.Model):
    """Wraps a classifier; trains backbone and head with separate optimizers.

    Keras optimizers have one learning rate for all variables. Fine-tuning wants a lower
    one for the pretrained backbone than for the new head (a per-group learning-rate
    multiplier), so `compile` takes a second optimizer for the backbone's variables.
    Only the wrapped `classifier` is saved as the run's model.

    Args:
        classifier: the functional model from `build_classifier`.
    """

    def __init__(self, classifier: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.backbone_optimizer = None
        self._backbone_ids: set[int] = set()

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def compile(self, optimizer, backbone_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.backbone_optimizer = backbone_optimizer
        head, backbone = self.variable_groups()
        self._backbone_ids = {id(v) for v in backbone}
        # Build before fit: optimizers refuse variables they were not built with.
        if backbone_optimizer is None:
            self.optimizer.build(head + backbone)
        else:
            self.optimizer.build(head)
            backbone_optimizer.build(backbone)

    def variable_groups(self):
        """(head variables, backbone variables) among the trainable ones."""
        backbone_ids = {id(v) for v in get_backbone(self.classifier).trainable_variables}
        head = [v for v in self.trainable_variables if id(v) not in backbone_ids]
        backbone = [v for v in self.trainable_variables if id(v) in backbone_ids]
        return head, backbone

    def optimizers(self):
        return [o for o in (self.optimizer, self.backbone_optimizer) if o is not None]

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        if self.backbone_optimizer is None:
            self.optimizer.apply(grads, variables)
        else:
            pairs = list(zip(grads, variables))
            head = [(g, v) for g, v in pairs if id(v) not in self._backbone_ids]
            backbone = [(g, v) for g, v in pairs if id(v) in self._backbone_ids]
            if head:
                self.optimizer.apply([g for g, _ in head], [v for _, v in head])
            if backbone:
                self.backbone_optimizer.apply([g for g, _ in backbone], [v for _, v in backbone])
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
