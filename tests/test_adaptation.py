import numpy as np
import pytest
import tensorflow as tf

import keras
from conftest import tiny_classifier
from helpers import check_method_contract, paired_batches

from kerastl.adaptation import CATALOG, build_method
from kerastl.adaptation.dann import grl_lambda
from kerastl.models.factory import set_trainable
from kerastl.models.layers import GradientReversal


def _tiny_classifier(classes=3, hidden_bn=False):
    # A kerastl-shaped classifier that traces fast; the real backbones are covered by
    # test_models and the adapt stage tests.
    classifier = tiny_classifier(classes, hidden_bn=hidden_bn)
    set_trainable(classifier.backbone, "all", "train")
    return classifier


_paired = paired_batches


@pytest.mark.parametrize("method", CATALOG.names())
def test_every_method_keeps_the_method_contract(method, tmp_path):
    check_method_contract(method, tmp_path)
    keras.backend.clear_session()


@pytest.mark.parametrize("method", ["dann", "mcd", "wdgrl"])
def test_methods_train_under_mixed_float16_with_loss_scaling(method):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        classifier = _tiny_classifier()
        model = build_method(method, classifier, keras.optimizers.Adam(1e-3), total_steps=3)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        if method == "wdgrl":
            assert isinstance(model.critic_optimizer, keras.optimizers.LossScaleOptimizer)
        before = [v.numpy().copy() for v in classifier.model.trainable_variables]
        # The dynamic loss scale starts at 2**15 and halves on every overflowing (skipped) step.
        history = model.fit(_paired(), epochs=1, steps_per_epoch=12, verbose=0)
        for key, values in history.history.items():
            assert np.all(np.isfinite(values)), (method, key, values)
        assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, classifier.model.trainable_variables))
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def test_gradient_reversal_negates_and_scales_gradients_exactly():
    layer = GradientReversal(0.25)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[2.0, 3.0, -4.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.5, -0.75, 1.0]])
    layer.coefficient.assign(2.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x))
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-2.0, -2.0, -2.0]])


def test_gradient_reversal_config_round_trips():
    layer = GradientReversal(0.5, name="grl")
    again = GradientReversal.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert float(again.coefficient.numpy()) == 0.5


@pytest.mark.parametrize("p", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_lambda_schedule_matches_the_formula(p):
    expected = 0.3 * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0)
    assert float(grl_lambda(tf.constant(p), 10.0, 0.3)) == pytest.approx(expected, rel=1e-6)


def test_dann_lambda_follows_training_progress():
    classifier = _tiny_classifier()
    model = build_method("dann", classifier, keras.optimizers.SGD(1e-3), total_steps=4, gamma=10.0, max_lambda=1.0)
    model.fit(_paired(), epochs=1, steps_per_epoch=3, verbose=0)
    # The last step ran at p = 2/4.
    assert float(model.grl.coefficient.numpy()) == pytest.approx(2 / (1 + np.exp(-5.0)) - 1, rel=1e-5)


@pytest.mark.parametrize("ramp", [False, True])
def test_the_weight_ramp_starts_the_adaptation_loss_at_zero_and_follows_progress(ramp):
    classifier = _tiny_classifier()
    model = build_method("mcc", classifier, keras.optimizers.SGD(1e-3), weight=2.0, weight_ramp=ramp, total_steps=4)
    logs = model.fit(_paired(), epochs=1, steps_per_epoch=1, verbose=0).history
    # Step 1 ran at p = 0: with the ramp the loss is the classification loss alone.
    gap = logs["loss"][0] - logs["cls_loss"][0]
    if ramp:
        assert gap == pytest.approx(0.0, abs=1e-6)
    else:
        assert gap == pytest.approx(2.0 * logs["adapt_loss"][0], rel=1e-5) and gap > 1e-3
    model.steps_done.assign(2)  # p = 0.5
    expected = 2.0 * (2 / (1 + np.exp(-5.0)) - 1) if ramp else 2.0
    assert float(model.adaptation_weight()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("method", ["source_only", "mcd", "target_oracle"])
def test_label_smoothing_smooths_the_trained_classification_loss(method):
    # cls_loss is what the step trains the classifier on (MCD: the mean of its two heads'
    # losses); with smoothing s it is the cross-entropy against (1 - s) y + s / K.
    (xs, ys), (xt, yt) = next(iter(_paired()))
    losses = {}
    for s in (0.0, 0.3):
        classifier = _tiny_classifier()
        rng = np.random.default_rng(0)  # the same non-uniform predictions for both runs
        classifier.model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(w.dtype) if w.ndim > 1 else w
                                      for w in classifier.model.get_weights()])
        model = build_method(method, classifier, keras.optimizers.SGD(0.0), total_steps=10, label_smoothing=s)
        labels = yt if method == "target_oracle" else ys
        # every method runs source and target through BN together (bn_protocol joint)
        probs = classifier.model(tf.concat([xs, xt], axis=0), training=True).numpy()
        probs = probs[len(xs):] if method == "target_oracle" else probs[:len(xs)]
        if method == "mcd":  # the second head (a clone, freshly initialised) made equal to the first
            model.head2.set_weights(model.head.get_weights())
        smoothed = (1 - s) * np.asarray(labels) + s / probs.shape[-1]
        expected = float(np.mean(-np.sum(smoothed * np.log(np.clip(probs, 1e-7, 1.0)), axis=-1)))
        losses[s] = float(model.update(xs, ys, xt, yt)["cls_loss"])
        assert losses[s] == pytest.approx(expected, rel=1e-4), (s, losses[s], expected)
        keras.backend.clear_session()
    assert abs(losses[0.3] - losses[0.0]) > 1e-2  # the smoothing is really applied
    with pytest.raises(ValueError, match="label_smoothing: 1.0 is not in"):
        build_method(method, _tiny_classifier(), keras.optimizers.SGD(0.0), label_smoothing=1.0)
    keras.backend.clear_session()


def test_unknown_method_parameter_is_a_config_error():
    from kerastl.errors import ConfigError

    with pytest.raises(ConfigError, match="adapt.params.gama: 3 is not allowed; expected a parameter of dann: gamma, max_lambda"):
        CATALOG.get("dann").load()(_tiny_classifier(), gama=3)
    with pytest.raises(ConfigError, match="adapt.params.hidden: 'big' is not allowed; expected an integer"):
        CATALOG.get("dann").load()(_tiny_classifier(), hidden="big")


def test_progress_inside_a_traced_step_is_the_exact_quotient():
    # A float32 division by a constant in a graph becomes a multiplication by the
    # reciprocal, one ulp off for ~1 step in 7: schedules (lambda, lr) then differ from
    # the ones a callback would set, and runs from their own earlier results.
    from helpers import build

    model, _ = build("source_only", total_steps=1500)
    read = tf.function(lambda: model.progress)
    wrong = []
    for k in range(0, 1503):
        model.steps_done.assign(k)
        if read().numpy() != np.float32(min(k / 1500, 1.0)):
            wrong.append(k)
    assert not wrong, wrong[:10]


def test_the_annealed_learning_rate_follows_training_steps_not_optimizer_updates():
    from kerastl.training.recipe import annealed_lr

    schedule = annealed_lr(0.01, 10.0, 0.75)
    model = build_method("mcd", _tiny_classifier(), keras.optimizers.SGD(schedule), total_steps=4)
    schedule.follow(model)
    model.fit(paired_batches(), epochs=1, steps_per_epoch=2, verbose=0)
    assert int(model.optimizer.iterations) == 2 * 6  # MCD: 1 + 1 + num_k updates per step
    # p = 2 steps of 4 (counting updates would give p = 1 and 0.01 / 11^0.75)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01 / (1 + 10 * 0.5) ** 0.75, rel=1e-6)


def test_a_backbone_optimizer_trains_the_backbone_at_its_own_rate():
    classifier = _tiny_classifier()
    model = build_method("dann", classifier, keras.optimizers.SGD(0.05),
                         backbone_optimizer=keras.optimizers.SGD(0.0), total_steps=4)
    backbone = [np.array(v) for v in classifier.backbone.trainable_variables]
    head = [np.array(v) for v in classifier.head.trainable_variables]
    disc = [np.array(v) for v in model.discriminator.trainable_variables]
    model.fit(paired_batches(), epochs=1, steps_per_epoch=2, verbose=0)
    assert len(model.optimizers()) == 2 and int(model.backbone_optimizer.iterations) == 2
    for before, v in zip(backbone, classifier.backbone.trainable_variables):
        np.testing.assert_array_equal(before, np.array(v))  # lr 0: the backbone stays
    moved = lambda old, new: any(not np.array_equal(a, np.array(b)) for a, b in zip(old, new))  # noqa: E731
    assert moved(head, classifier.head.trainable_variables)
    assert moved(disc, model.discriminator.trainable_variables)


def _first_bn(classifier):
    bn = next(l for l in classifier.backbone.layers if isinstance(l, keras.layers.BatchNormalization))
    probe = keras.Model(classifier.backbone.input, bn.input)  # the tiny backbone takes raw images
    return bn, probe


@pytest.mark.parametrize("protocol", ["joint", "source", "separate"])
def test_the_bn_protocol_decides_what_batchnorm_statistics_see(protocol):
    classifier = _tiny_classifier()
    model = build_method("source_only", classifier, keras.optimizers.SGD(0.0), total_steps=2,
                         bn_protocol=protocol)
    (xs, ys), (xt, yt) = next(iter(paired_batches()))
    bn, probe = _first_bn(classifier)
    # joint: one update from both domains' batch; source: the source's only; separate: the
    # source's, then the target's (one pass per domain).
    passes = {"joint": [np.concatenate([xs, xt])], "source": [xs], "separate": [xs, xt]}[protocol]
    expected = np.asarray(bn.moving_mean)
    for seen in passes:
        batch_mean = np.asarray(probe(np.asarray(seen))).mean(axis=(0, 1, 2))
        expected = expected * bn.momentum + batch_mean * (1 - bn.momentum)
    model.fit(tf.data.Dataset.from_tensors(((xs, ys), (xt, yt))), epochs=1, verbose=0)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), expected, rtol=1e-4, atol=1e-5)


def test_adabn_sets_batchnorm_statistics_to_the_targets_and_restores_the_layers():
    from kerastl.models.batchnorm import recalibrate_batchnorm

    classifier = _tiny_classifier()
    classifier.backbone.trainable = False  # frozen BN is re-estimated too
    rng = np.random.default_rng(4)
    target = [rng.uniform(0, 64, (4, 32, 32, 3)).astype("float32") for _ in range(3)]
    bn, probe = _first_bn(classifier)
    momentum = bn.momentum
    assert recalibrate_batchnorm(classifier.features, target) == 3
    expected = np.asarray(probe(np.concatenate(target))).mean(axis=(0, 1, 2))  # equal batches
    np.testing.assert_allclose(np.asarray(bn.moving_mean), expected, rtol=1e-4, atol=1e-5)
    assert bn.momentum == momentum and not bn.trainable


def test_cdan_randomized_map_has_its_dimension_and_estimates_the_maps_inner_products():
    model = build_method("cdan", _tiny_classifier(), keras.optimizers.SGD(1e-3), total_steps=2, random_dim=4096)
    assert model.discriminator.input.shape[-1] == 4096
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, model.feature_dim)).astype("float32")
    p = rng.dirichlet(np.ones(3), size=2).astype("float32")
    exact = np.einsum("bi,bj->bij", p, f).reshape(2, -1)
    approx = np.asarray(model.discriminator_input(tf.constant(f), tf.constant(p)))
    # <T(f1,g1), T(f2,g2)> estimates <f1,f2><g1,g2>, the exact map's inner product.
    np.testing.assert_allclose(approx @ approx.T, exact @ exact.T, rtol=0.25, atol=0.05 * np.abs(exact @ exact.T).max())


def test_mdd_adversarial_head_is_the_main_heads_architecture_with_its_own_weights():
    classifier = _tiny_classifier()
    model = build_method("mdd", classifier, keras.optimizers.SGD(1e-3), total_steps=2)
    shapes = [tuple(w.shape) for w in classifier.head.weights]
    assert [tuple(w.shape) for w in model.adversary.weights] == shapes
    assert not {id(w) for w in model.adversary.weights} & {id(w) for w in classifier.head.weights}
    x = np.random.default_rng(0).normal(size=(4, model.feature_dim)).astype("float32")
    logits = np.asarray(model.adversary(x))
    assert not np.allclose(logits.sum(axis=1), 1.0)  # logits, not probabilities


def test_coral_counts_mean_and_covariance_differences_on_a_comparable_scale():
    from kerastl.adaptation.statistics import coral

    rng = np.random.default_rng(0)
    fs = rng.normal(size=(64, 8)).astype("float32")
    assert float(coral(fs, fs)) == pytest.approx(0.0, abs=1e-7)
    # A mean shift alone (covariances equal) is a difference, as in TLlib and DomainBed.
    assert float(coral(fs, fs + 1.0)) == pytest.approx(1.0, rel=1e-5)
    ft = fs * 2.0  # covariances x4: mean squared difference of the entries of 3 C_s
    cov = np.cov(fs, rowvar=False)
    mean_term = np.mean(np.square(fs.mean(0) - ft.mean(0)))
    assert float(coral(fs, ft)) == pytest.approx(mean_term + np.mean(np.square(3 * cov)), rel=1e-4)


def test_mcd_heads_batchnorm_sees_source_and_target_together_under_the_joint_protocol():
    classifier = _tiny_classifier(hidden_bn=True)
    model = build_method("mcd", classifier, keras.optimizers.SGD(0.0), total_steps=2, num_k=1)
    (xs, ys), (xt, yt) = next(iter(paired_batches()))
    bn = classifier.head.get_layer("hidden_bn_0")
    before = np.asarray(bn.moving_mean).copy()
    # With lr 0 every pass sees the same weights: steps A, B and C (num_k 1) each move
    # the moving mean towards the joint batch's hidden-layer mean.
    probe = keras.Model(classifier.model.input, classifier.model.get_layer("hidden_0").output)
    # (the backbone's own BN normalizes with the joint batch's statistics in training mode)
    joint_mean = np.asarray(probe(np.concatenate([xs, xt]), training=True)).mean(axis=0)
    expected = before
    for _ in range(3):
        expected = expected * bn.momentum + joint_mean * (1 - bn.momentum)
    model.fit(tf.data.Dataset.from_tensors(((xs, ys), (xt, yt))), epochs=1, verbose=0)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", [m for m in CATALOG.names() if m != "target_oracle"])
def test_labelled_target_images_reach_every_methods_classification_loss(method):
    """Semi-supervised: a third part of the batch (labelled target images) is classified
    with the source; change only its labels and the classification loss changes."""
    classifier = _tiny_classifier()
    model = build_method(method, classifier, keras.optimizers.SGD(0.0), total_steps=4)
    losses = []
    for labels in ([0, 1, 2, 0], [1, 2, 0, 1]):
        logs = model.fit(paired_batches(labelled=labels), epochs=1, steps_per_epoch=1, verbose=0).history
        assert np.isfinite(logs["loss"][0]) and np.isfinite(logs["cls_loss"][0])
        losses.append(logs["cls_loss"][0])
    assert abs(losses[0] - losses[1]) > 1e-4, (method, losses)
    keras.backend.clear_session()


def test_mme_head_ascends_the_target_entropy_and_the_features_descend_it():
    from kerastl.adaptation.base import Batch

    classifier = _tiny_classifier()
    model = build_method("mme", classifier, keras.optimizers.SGD(0.0), total_steps=2)
    (xs, ys), (xt, yt) = next(iter(paired_batches()))
    head_vars, feat_vars = classifier.head.trainable_variables, classifier.features.trainable_variables

    def grads(loss_of_features):
        with tf.GradientTape() as tape:
            loss = loss_of_features(classifier.features(xt, training=True))
        return tape.gradient(loss, head_vars + feat_vars)

    def adaptation(ft):
        return model.adaptation_loss(Batch(xs, ys, xt, yt, None, ft, None, None))[0]

    def entropy(ft):
        p = classifier.head(ft, training=True)
        return tf.reduce_mean(-tf.reduce_sum(p * tf.math.log(p + 1e-7), axis=1))

    got, plain = grads(adaptation), grads(entropy)
    n = len(head_vars)
    for g, e in zip(got[:n], plain[:n]):  # head: minimising -H ascends H
        np.testing.assert_allclose(np.asarray(g), -np.asarray(e), rtol=1e-4, atol=1e-7)
    for g, e in zip(got[n:], plain[n:]):  # features: the reversed gradient descends H
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-7)


def test_mcc_loss_equals_its_definition_and_bounds():
    """MCC (Jin et al. 2020): temperature-softened predictions, entropy weights, the
    row-normalised class-correlation matrix, its off-diagonal mass over C."""
    from kerastl.adaptation.losses import class_confusion

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = 2.5
    p = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)  # softmax(logits / T)
    h = -(p * np.log(p + 1e-5)).sum(1)
    w = 1 + np.exp(-h)
    w = len(p) * w / w.sum()
    cc = (p * w[:, None]).T @ p
    cc = cc / cc.sum(1, keepdims=True)
    expected = (cc.sum() - np.trace(cc)) / 5
    assert float(class_confusion(tf.constant(probs, tf.float32), t)) == pytest.approx(expected, rel=1e-4)
    assert float(class_confusion(tf.fill([8, 10], 0.1))) == pytest.approx(0.9, rel=1e-5)  # (C - 1) / C
    assert float(class_confusion(tf.one_hot([0, 1, 2, 3], 4))) == pytest.approx(0.0, abs=1e-6)
