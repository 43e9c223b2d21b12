"""Each adaptation method's own term against an independent reference.

The method contract (helpers.py) checks that every method trains; these tests check that
each one trains on *its* loss: the value of its characteristic term on a fixed small
batch equals a NumPy (or hand-derived) reference, and, for the gradient-reversal methods,
that the features receive -lambda times the gradient of the plain loss while the method's
own sub-model receives the plain gradient.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
from helpers import build

from kerastl.adaptation.base import Batch
from kerastl.adaptation.catalog import CATALOG

N = 6  # examples per domain


def _model(method, **hparams):
    model, _ = build(method, total_steps=4, optimizer=keras.optimizers.SGD(0.0), **hparams)
    model.steps_done.assign(2)  # progress 0.5: every schedule is well above 0
    return model


def _inputs(model, seed=0):
    """Fixed features and class probabilities of N source and N target images: the target
    shifted and scaled, the probabilities from confident to near-uniform."""
    rng = np.random.default_rng(seed)
    d, c = model.feature_dim, model.num_classes
    fs = rng.normal(0.0, 1.0, (N, d)).astype("float32")
    ft = (rng.normal(0.5, 2.0, (N, d))).astype("float32")
    concentration = np.linspace(0.2, 5.0, N)[:, None]
    ps = np.stack([rng.dirichlet(np.full(c, a)) for a in concentration[:, 0]]).astype("float32")
    pt = np.stack([rng.dirichlet(np.full(c, a)) for a in concentration[::-1, 0]]).astype("float32")
    return fs, ft, np.clip(ps, 1e-4, 1.0), np.clip(pt, 1e-4, 1.0)


def _batch(fs, ft, ps, pt):
    zeros = tf.zeros((N, 32, 32, 3))
    labels = tf.one_hot(np.arange(N) % 3, 3)
    return Batch(zeros, labels, zeros, labels, tf.convert_to_tensor(fs), tf.convert_to_tensor(ft),
                 tf.convert_to_tensor(ps), tf.convert_to_tensor(pt))


def _lambda(progress, gamma, max_lambda):
    return max_lambda * (2.0 / (1.0 + np.exp(-gamma * progress)) - 1.0)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _bce_source_vs_target(logits, n_source):
    """Per-example binary cross-entropy, source labelled 1 and target 0, from logits."""
    z = np.asarray(logits, np.float64).reshape(-1)
    return np.concatenate([_softplus(-z[:n_source]), _softplus(z[n_source:])])


def _mlp(model, x):
    """A Dense stack's output computed from its weights in NumPy (ReLU between layers,
    the last layer linear): the reference for sub-models built of Dense layers."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    h = np.asarray(x, np.float64)
    for i, layer in enumerate(dense):
        kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
        h = h @ kernel + bias
        if i < len(dense) - 1:
            h = np.maximum(h, 0.0)
    return h


def _outer(p, f):
    """CDAN's multilinear map: row b is (p_b1 f_b, p_b2 f_b, ...)."""
    return (np.asarray(p)[:, :, None] * np.asarray(f)[:, None, :]).reshape(len(f), -1)


def _entropy(p):
    return -np.sum(p * np.log(p + 1e-5), axis=1)


# --- DANN, CDAN, CDAN+E: the domain discriminator ---------------------------------------------


def _adversarial_reference(model, fs, ft, ps, pt):
    f = np.concatenate([fs, ft])
    p = np.concatenate([ps, pt])
    inputs = _outer(p, f) if model.method_name in ("cdan", "cdan+e") else f
    per = _bce_source_vs_target(_mlp(model.discriminator, inputs), N)
    if model.hp.get("entropy"):
        w = 1.0 + np.exp(-_entropy(p))
        ws, wt = w[:N] / w[:N].sum(), w[N:] / w[N:].sum()
        return 0.5 * (np.sum(ws * per[:N]) + np.sum(wt * per[N:])), per.mean()
    return per.mean(), per.mean()


@pytest.mark.parametrize("method", ["dann", "cdan", "cdan+e"])
def test_the_domain_loss_is_the_discriminators_cross_entropy_on_its_own_input(method):
    model = _model(method, dropout=0.0, hidden=32)
    # Weights that make its logits (and so the per-example losses) differ widely.
    rng = np.random.default_rng(1)
    model.discriminator.set_weights([rng.normal(0.0, 0.4, w.shape) for w in model.discriminator.get_weights()])
    fs, ft, ps, pt = _inputs(model)
    loss, logs = model.adaptation_loss(_batch(fs, ft, ps, pt))
    expected, unweighted = _adversarial_reference(model, fs, ft, ps, pt)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(logs["lambda"]) == pytest.approx(_lambda(0.5, 10.0, 1.0), rel=1e-5)
    if method == "cdan+e":  # the batch makes the entropy weights matter
        assert abs(expected - unweighted) > 30 * 1e-4 * unweighted  # 30 times the tolerance


def test_cdan_conditions_the_discriminator_on_the_outer_product_of_predictions_and_features():
    model = _model("cdan", dropout=0.0)
    fs, _, ps, _ = _inputs(model)
    got = np.asarray(model.discriminator_input(tf.constant(fs), tf.constant(ps)))
    np.testing.assert_allclose(got, _outer(ps, fs), rtol=1e-6, atol=1e-7)
    assert model.discriminator.input.shape[-1] == model.feature_dim * model.num_classes


def test_cdan_randomized_map_feeds_the_discriminator_the_product_of_two_fixed_projections():
    model = _model("cdan", dropout=0.0, hidden=32, random_dim=64)
    fs, ft, ps, pt = _inputs(model)
    rf, rg = np.asarray(model.random_f, np.float64), np.asarray(model.random_g, np.float64)
    f, p = np.concatenate([fs, ft]), np.concatenate([ps, pt])
    mapped = (f @ rf) * (p @ rg) / np.sqrt(64)
    np.testing.assert_allclose(np.asarray(model.discriminator_input(tf.constant(f), tf.constant(p))), mapped,
                               rtol=1e-4, atol=1e-5)
    loss, _ = model.adaptation_loss(_batch(fs, ft, ps, pt))
    assert float(loss) == pytest.approx(_bce_source_vs_target(_mlp(model.discriminator, mapped), N).mean(), rel=1e-4)


@pytest.mark.parametrize("method", ["dann", "cdan", "mdd"])
def test_gradient_reversal_gives_the_features_minus_lambda_times_the_plain_gradient(method):
    """The feature gradient of the adaptation loss is -lambda_p times the gradient of the
    same loss without reversal; the adversary (discriminator, adversarial head) gets the
    plain gradient, so it learns its task while the features learn against it."""
    model = _model(method, **({"dropout": 0.0} if method != "mdd" else {}))
    fs, ft, ps, pt = (tf.constant(a) for a in _inputs(model))
    adversary = model.adversary if method == "mdd" else model.discriminator
    params = CATALOG.get(method).defaults()
    lam = _lambda(0.5, params["gamma"], params["max_lambda"])

    def plain(fs, ft):  # the loss written out by the test, no reversal
        if method == "mdd":
            logits = adversary(tf.concat([fs, ft], 0))
            ys = tf.one_hot(tf.argmax(ps, 1), 3)
            yt = tf.one_hot(tf.argmax(pt, 1), 3)
            source = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(ys, logits[:N]))
            agree = tf.reduce_sum(tf.nn.softmax(logits[N:]) * yt, axis=1)
            return model.hp["margin"] * source + tf.reduce_mean(-tf.math.log(1.0 - agree))
        f = tf.concat([fs, ft], 0)
        p = tf.concat([ps, pt], 0)
        x = f if method == "dann" else tf.reshape(p[:, :, None] * f[:, None, :], [2 * N, -1])
        z = adversary(x)[:, 0]
        return tf.reduce_mean(tf.concat([tf.nn.softplus(-z[:N]), tf.nn.softplus(z[N:])], 0))

    def grads(loss_fn):
        with tf.GradientTape() as tape:
            tape.watch([fs, ft])
            loss = loss_fn(fs, ft)
        return loss, tape.gradient(loss, [fs, ft, *adversary.trainable_variables])

    loss, got = grads(lambda fs, ft: model.adaptation_loss(_batch(fs, ft, ps, pt))[0])
    plain_loss, want = grads(plain)
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-4)
    for g, w in zip(got[:2], want[:2]):  # features: reversed and scaled
        assert float(np.max(np.abs(w))) > 1e-4
        np.testing.assert_allclose(np.asarray(g), -lam * np.asarray(w), rtol=1e-3, atol=1e-7)
    for g, w in zip(got[2:], want[2:]):  # the adversary: its own loss, not reversed
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-3, atol=1e-7)


# --- MDD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [4.0, 1.5])
def test_mdd_disparity_weights_the_source_term_by_its_margin(margin):
    model = _model("mdd", margin=margin)
    fs, ft, ps, pt = _inputs(model)
    loss, _ = model.adaptation_loss(_batch(fs, ft, ps, pt))
    logits = _mlp(model.adversary, np.concatenate([fs, ft]))
    ls, lt = logits[:N], logits[N:]
    ys, yt = np.argmax(ps, 1), np.argmax(pt, 1)
    log_softmax_s = ls - np.log(np.exp(ls).sum(1, keepdims=True))
    source = -np.mean(log_softmax_s[np.arange(N), ys])
    softmax_t = np.exp(lt) / np.exp(lt).sum(1, keepdims=True)
    target = np.mean(-np.log(1.0 - softmax_t[np.arange(N), yt]))
    assert float(loss) == pytest.approx(margin * source + target, rel=1e-4)
    assert source > 0.05 and target > 0.05  # both terms count in this batch


# --- WDGRL --------------------------------------------------------------------------------------


def _critic_gradients(model, x):
    """d critic / d x for each row, from the critic's weights (Dense-ReLU-Dense)."""
    (k1, b1), (k2, _) = ([np.asarray(w, np.float64) for w in layer.get_weights()]
                         for layer in model.critic.layers if isinstance(layer, keras.layers.Dense))
    active = (np.asarray(x, np.float64) @ k1 + b1) > 0
    return (active * k2[:, 0]) @ k1.T


def test_wdgrl_critic_loss_is_minus_the_wasserstein_estimate_plus_the_gradient_penalty():
    model = _model("wdgrl", gp_weight=10.0)
    fs, ft, _, _ = _inputs(model)
    inter = 0.3 * fs + 0.7 * ft
    got = float(model.critic_loss(tf.constant(fs), tf.constant(ft), tf.constant(inter)))
    w = _mlp(model.critic, fs).mean() - _mlp(model.critic, ft).mean()
    norms = np.linalg.norm(_critic_gradients(model, inter) + 1e-12, axis=1)
    penalty = np.mean((norms - 1.0) ** 2)
    assert penalty > 1e-3 and abs(w) > 1e-3
    assert got == pytest.approx(-w + 10.0 * penalty, rel=1e-4)


def test_wdgrl_critic_steps_descend_its_loss_and_the_features_the_distance():
    """One critic step with SGD: the critic's weights move by -lr times the gradient of the
    critic loss written out here; then the adaptation loss is the trained critic's W, whose
    gradient reaches the features unreversed (they minimise the distance)."""
    model = _model("wdgrl", critic_steps=1, gp_weight=10.0)
    model.critic_optimizer = keras.optimizers.SGD(0.1)
    model.critic_optimizer.build(model.critic.trainable_variables)
    fs, ft, ps, pt = (tf.constant(a) for a in _inputs(model))
    inter = model.interpolate(fs, ft, 0)  # the points the step draws (iterations 0, step 0)
    critic = model.critic

    with tf.GradientTape() as tape:
        with tf.GradientTape() as inner:
            inner.watch(inter)
            c = critic(inter)
        norms = tf.norm(inner.gradient(c, inter) + 1e-12, axis=1)
        reference = (-(tf.reduce_mean(critic(fs)) - tf.reduce_mean(critic(ft)))
                     + 10.0 * tf.reduce_mean(tf.square(norms - 1.0)))
    expected = [np.asarray(v) - 0.1 * np.asarray(g)
                for v, g in zip(critic.trainable_variables, tape.gradient(reference, critic.trainable_variables))]

    with tf.GradientTape() as tape:
        tape.watch([fs, ft])
        loss, logs = model.adaptation_loss(_batch(fs, ft, ps, pt))
    for v, e in zip(critic.trainable_variables, expected):
        np.testing.assert_allclose(np.asarray(v), e, rtol=1e-4, atol=1e-6)
    w = _mlp(critic, fs.numpy()).mean() - _mlp(critic, ft.numpy()).mean()
    assert float(loss) == pytest.approx(w, rel=1e-4) and abs(w) > 1e-3
    assert float(logs["wasserstein"]) == pytest.approx(w, rel=1e-4)
    gs, gt = tape.gradient(loss, [fs, ft])
    np.testing.assert_allclose(np.asarray(gs), _critic_gradients(model, fs) / N, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gt), -_critic_gradients(model, ft) / N, rtol=1e-4, atol=1e-7)


# --- statistic matching: DAN, Deep CORAL, MCC ---------------------------------------------------


def _mk_mmd(a, b, mul=2.0, k=5):
    """Long et al.'s multi-kernel MMD^2 (biased), bandwidths around the mean pairwise distance."""
    x = np.concatenate([a, b]).astype(np.float64)
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    n = len(x)
    base = d2.sum() / (n * n - n) / mul ** (k // 2)
    kernel = sum(np.exp(-d2 / (base * mul**i + 1e-8)) for i in range(k))
    m = len(a)
    return kernel[:m, :m].mean() + kernel[m:, m:].mean() - 2 * kernel[:m, m:].mean()


@pytest.mark.parametrize("on_probabilities", [True, False])
def test_dan_loss_is_the_multi_kernel_mmd_of_features_and_predictions(on_probabilities):
    model = _model("dan", on_probabilities=on_probabilities, num_kernels=3)
    fs, ft, ps, pt = _inputs(model)
    loss, _ = model.adaptation_loss(_batch(fs, ft, ps, pt))
    expected = _mk_mmd(fs, ft, 2.0, 3) + (_mk_mmd(ps, pt, 2.0, 3) if on_probabilities else 0.0)
    assert _mk_mmd(fs, ft, 2.0, 3) > 0.01 and _mk_mmd(ps, pt, 2.0, 3) > 0.01
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_deep_coral_loss_is_the_mean_and_covariance_difference():
    model = _model("deep_coral")
    fs, ft, ps, pt = _inputs(model)
    loss, _ = model.adaptation_loss(_batch(fs, ft, ps, pt))
    means = np.mean((fs.mean(0) - ft.mean(0)) ** 2)
    covs = np.mean((np.cov(fs, rowvar=False) - np.cov(ft, rowvar=False)) ** 2)
    assert float(loss) == pytest.approx(means + covs, rel=1e-4)


def _class_confusion(probs, t):
    p = np.exp(np.log(probs) / t)
    p = p / p.sum(1, keepdims=True)
    w = 1 + np.exp(-_entropy(p))
    w = len(p) * w / w.sum()
    cc = (p * w[:, None]).T @ p
    cc = cc / cc.sum(1, keepdims=True)
    return (cc.sum() - np.trace(cc)) / p.shape[1]


@pytest.mark.parametrize("temperature", [2.5, 1.0])
def test_mcc_loss_is_the_class_confusion_of_the_target_predictions(temperature):
    model = _model("mcc", temperature=temperature)
    fs, ft, ps, pt = _inputs(model)
    loss, _ = model.adaptation_loss(_batch(fs, ft, ps, pt))
    assert float(loss) == pytest.approx(_class_confusion(pt.astype(np.float64), temperature), rel=1e-4)


# --- MME, MCD: losses through the heads ---------------------------------------------------------


def test_mme_loss_is_minus_the_entropy_of_the_heads_target_predictions():
    model = _model("mme")
    fs, ft, ps, pt = _inputs(model)
    loss, logs = model.adaptation_loss(_batch(fs, ft, ps, pt))
    p = np.asarray(model.head(ft, training=True), np.float64)
    entropy = np.mean(-np.sum(p * np.log(p + 1e-7), axis=1))
    assert entropy > 0.1
    assert float(loss) == pytest.approx(-entropy, rel=1e-4)
    assert float(logs["target_entropy"]) == pytest.approx(entropy, rel=1e-4)


def test_mcd_discrepancy_is_the_mean_absolute_difference_of_the_two_heads_on_the_target():
    from helpers import paired_batches

    model = _model("mcd", num_k=1)  # SGD(0): every inner step sees the same weights
    model.weight = 2.0  # adapt.weight scales the discrepancy of steps B and C
    (xs, ys), (xt, yt) = next(iter(paired_batches()))
    joint = model.features(tf.concat([xs, xt], 0), training=True)
    p1 = np.asarray(model.head(joint, training=True))[len(xs):]
    p2 = np.asarray(model.head2(joint, training=True))[len(xs):]
    expected = np.mean(np.abs(p1 - p2))
    assert expected > 1e-3
    logs = model.update(xs, ys, xt, yt)
    assert float(logs["discrepancy"]) == pytest.approx(expected, rel=1e-4)  # what step B maximises
    assert float(logs["adapt_loss"]) == pytest.approx(2.0 * expected, rel=1e-4)  # what step C minimises


# --- PADA: source classes weighted by the target's predictions -------------------------------


def test_pada_weighs_each_source_class_by_the_targets_mean_prediction_in_both_losses():
    model = _model("pada", dropout=0.0, hidden=32, class_weight_momentum=0.0)  # the batch's mean only
    rng = np.random.default_rng(1)
    model.discriminator.set_weights([rng.normal(0.0, 0.4, w.shape) for w in model.discriminator.get_weights()])
    fs, ft, ps, _ = _inputs(model)
    # The target is hardly ever predicted in class 2: a class it lacks.
    pt = np.tile(np.array([[0.6, 0.38, 0.02], [0.3, 0.68, 0.02]], "float32"), (N // 2, 1))
    batch = _batch(fs, ft, ps, pt)
    weights = pt.mean(axis=0) / pt.mean(axis=0).max()
    ys = np.arange(N) % 3
    ce = -np.log(ps[np.arange(N), ys])
    expected_cls = np.sum(weights[ys] * ce) / np.sum(weights[ys])
    assert float(model.classification_loss(batch)) == pytest.approx(expected_cls, rel=1e-4)
    assert abs(expected_cls - ce.mean()) > 30 * 1e-4 * ce.mean()  # the weights matter on this batch
    per = _bce_source_vs_target(_mlp(model.discriminator, np.concatenate([fs, ft])), N)
    ws = weights[ys] / weights[ys].sum()
    loss, logs = model.adaptation_loss(batch)
    assert float(loss) == pytest.approx(0.5 * (np.sum(ws * per[:N]) + per[N:].mean()), rel=1e-4)
    assert float(logs["class_weight_min"]) == pytest.approx(weights.min(), rel=1e-4)


def test_pada_class_weights_are_a_moving_average_of_the_target_predictions():
    model = _model("pada", class_weight_momentum=0.5)
    fs, ft, ps, _ = _inputs(model)
    pt = np.tile(np.array([[0.8, 0.1, 0.1]], "float32"), (N, 1))
    model.classification_loss(_batch(fs, ft, ps, pt))  # from the initial all-ones average
    np.testing.assert_allclose(model.class_average.numpy(), [0.9, 0.55, 0.55], rtol=1e-6)
    np.testing.assert_allclose(model.class_weights().numpy(), [1.0, 0.55 / 0.9, 0.55 / 0.9], rtol=1e-6)


def test_pada_takes_exact_weights_when_the_run_knows_the_targets_classes():
    model = _model("pada", dropout=0.0, hidden=32, target_classes=[0, 1])  # the target lacks class 2
    fs, ft, ps, _ = _inputs(model)
    pt = np.full((N, 3), 1.0 / 3.0, "float32")  # the predictions would give every class weight 1
    batch = _batch(fs, ft, ps, pt)
    ys = np.arange(N) % 3
    ce = -np.log(ps[np.arange(N), ys])
    assert float(model.classification_loss(batch)) == pytest.approx(ce[ys != 2].mean(), rel=1e-4)
    per = _bce_source_vs_target(_mlp(model.discriminator, np.concatenate([fs, ft])), N)
    loss, _ = model.adaptation_loss(batch)
    assert float(loss) == pytest.approx(0.5 * (per[:N][ys != 2].mean() + per[N:].mean()), rel=1e-4)
    # A batch with no source image of the target's classes counts nothing, and is not NaN.
    only_absent = batch._replace(ys=tf.one_hot(np.full(N, 2), 3))
    assert float(model.classification_loss(only_absent)) == 0.0
    assert np.isfinite(float(model.adaptation_loss(only_absent)[0]))
    estimated = _model("pada", target_classes=[0, 1], known_classes=False, class_weight_momentum=0.0)
    estimated.classification_loss(batch)
    np.testing.assert_allclose(estimated.class_weights().numpy(), [1.0, 1.0, 1.0], rtol=1e-6)
