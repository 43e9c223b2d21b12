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

    Args:
        classifier: a `Classifier` handle from `models.factory`.
    """

    def __init__(self, classifier, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier.model
        self.backbone = classifier.backbone
        self.backbone_optimizer = None
        self._backbone_ids: set[int] = set()

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
            y_pred = self(x, training=True)
            # Under a strategy Keras divides the loss by the number of replicas, so that
            # the gradients summed over replicas are those of the global batch's mean.
            return self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight), y_pred

        loss, y_pred = apply_scaled(loss_fn, groups)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas())  # the loss of the global batch, for the logs
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
