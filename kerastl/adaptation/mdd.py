"""MDD: margin disparity discrepancy with an adversarial head."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, grl_lambda
from kerastl.adaptation.catalog import ADVERSARIAL, Param, declare
from kerastl.models.layers import GradientReversal

declare("mdd", "MDD", "margin disparity discrepancy with an adversarial head (Zhang et al. 2019)",
        gamma=ADVERSARIAL["gamma"],
        max_lambda=Param(0.1, "the gradient-reversal coefficient lambda_p is scaled to this (TLlib: 0.1)",
                         0.0, 100.0),
        margin=Param(4.0, "the margin factor gamma of the disparity", 1.0, 100.0))


class MDD(AdaptationModel):
    """Margin disparity discrepancy (Zhang et al., ICML 2019).

    An adversarial head h' behind a gradient reversal layer learns to agree with the
    main head's predictions on the source and to disagree on the target; the features
    learn the opposite. `margin` (gamma in the paper) weights the source term. h' has the
    main head's architecture (the theory compares hypotheses of one class), with logits out.
    """

    def build_extra(self):
        self.grl = GradientReversal(0.0, name="grl")
        output = self.head.layers[-1]

        def fresh(layer):  # new weights; the output layer gives logits
            config = layer.get_config()
            if layer is output:
                config["activation"] = "linear"
            return layer.__class__.from_config(config)

        clone = keras.models.clone_model(self.head, clone_function=fresh)
        self.adversary = keras.Model(clone.input, clone.output, name="adversarial_head")

    def extra_variables(self):
        return self.adversary.trainable_variables

    def adaptation_loss(self, batch):
        lam = grl_lambda(self.progress, self.hp["gamma"], self.hp["max_lambda"])
        self.grl.coefficient.assign(lam)
        logits = self.adversary(self.grl(tf.concat([batch.fs, batch.ft], axis=0)), training=True)
        n = tf.shape(batch.fs)[0]
        adv_s, adv_t = logits[:n], logits[n:]
        pred_s = tf.one_hot(tf.argmax(tf.stop_gradient(batch.ps), axis=1), self.num_classes)
        pred_t = tf.one_hot(tf.argmax(tf.stop_gradient(batch.pt), axis=1), self.num_classes)
        source = keras.losses.categorical_crossentropy(pred_s, adv_s, from_logits=True)
        p_adv_t = tf.reduce_sum(tf.nn.softmax(adv_t) * pred_t, axis=1)
        target = -tf.math.log(tf.clip_by_value(1.0 - p_adv_t, 1e-6, 1.0))
        loss = self.hp["margin"] * tf.reduce_mean(source) + tf.reduce_mean(target)
        return loss, {"lambda": lam}
