"""PADA: DANN for a target that holds only some of the source's classes."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import every_labelled, global_sum, weighted_mean
from kerastl.adaptation.catalog import ADVERSARIAL, Param, declare
from kerastl.adaptation.dann import DANN

declare("pada", "PADA", "DANN with the source's classes weighted, for a target with only some of them: by the "
        "target's class list when the run knows it, else by how often the target is predicted in each "
        "(Cao et al. 2018)", **ADVERSARIAL,
        class_weight_momentum=Param(0.99, "per-step moving average of the target's mean prediction that the "
                                          "class weights are read from", 0.0, 0.9999),
        known_classes=Param(True, "when the run knows which source classes the target holds (its classes "
                                  "matched by name), weigh those 1 and the others 0 instead of estimating "
                                  "the weights"))


class PADA(DANN):
    """Partial adversarial domain adaptation (Cao et al., ECCV 2018).

    When the target holds only some of the source's classes, aligning the whole source with
    the target pulls target images towards classes the target does not have. PADA weighs
    each source class by the target's average predicted probability for it, normalized so
    the largest weight is 1: classes the target lacks are rarely predicted there, so their
    source images count little in both the classification loss and the domain
    discriminator's loss. The average here is a moving average over training steps (the
    paper recomputes it over the whole target now and then); the target's own images keep
    weight 1, as in the paper and TLlib.

    The estimate is only as good as the source model's predictions on the target: on the
    digits a weak one predicted target images in classes the target lacks about as often as
    in some it has, and the weights hardly separated them. When the run knows the target's
    classes (a partial transfer whose classes were matched by name, `target_classes`), the
    weights are exact instead (`known_classes`, on by default): 1 for the target's classes,
    0 for the rest, so alignment and classification use the source images of the target's
    classes only. A target without class names (a folder of unlabelled images) falls back
    to the estimate.
    """

    def build_extra(self):
        super().build_extra()
        # Every replica computes the same global-batch average, so the first one's update stands.
        self.class_average = self.add_weight(
            name="class_average", shape=(self.num_classes,), initializer="ones", trainable=False,
            aggregation="only_first_replica")

    @property
    def exact_weights(self) -> bool:
        return bool(self.hp["known_classes"]) and self.target_classes is not None

    def class_weights(self):
        if self.exact_weights:
            return tf.constant([1.0 if i in self.target_classes else 0.0 for i in range(self.num_classes)])
        average = tf.convert_to_tensor(self.class_average)
        return average / tf.reduce_max(average)

    def update_class_average(self, pt):
        """The moving average of the target's mean prediction, over the global batch."""
        n = global_sum(tf.cast(tf.shape(pt)[0], tf.float32))
        mean = global_sum(tf.reduce_sum(tf.stop_gradient(tf.cast(pt, tf.float32)), axis=0)) / n
        m = float(self.hp["class_weight_momentum"])
        self.class_average.assign(m * self.class_average + (1.0 - m) * mean)

    def weights_of(self, y):
        """Each labelled image's weight: its class's."""
        return tf.gather(self.class_weights(), tf.argmax(y, axis=1))

    def classification_loss(self, batch):
        self.update_class_average(batch.pt)
        y, p = every_labelled(batch.ys, batch.ps, batch.yl, batch.pl)
        ce = keras.losses.categorical_crossentropy(y, p, label_smoothing=self.label_smoothing)
        return weighted_mean(ce, self.weights_of(y))

    def sample_weights(self, batch, p, n_source):
        ws = self.weights_of(batch.ys)
        wt = tf.ones([tf.shape(p)[0] - n_source])
        # Each domain's examples sum to 1 over the global batch: the source's weights only
        # change which source images count, not how much the source counts against the target.
        return tf.concat([tf.math.divide_no_nan(ws, global_sum(tf.reduce_sum(ws))),
                          wt / global_sum(tf.reduce_sum(wt))], axis=0)

    def adaptation_loss(self, batch):
        loss, logs = super().adaptation_loss(batch)
        return loss, {**logs, "class_weight_min": tf.reduce_min(self.class_weights())}
