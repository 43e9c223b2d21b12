"""Fine-tuning's regularizers: weight averaging (EMA), layer-wise learning-rate decay,
L2-SP, batch spectral shrinkage, and MixUp / CutMix / RandAugment in the augment section.
Each test fails when its option is ignored."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_classifier, tiny_config


def _batches(n=4, batch=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n * batch, 32, 32, 3)).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, n * batch)]
    return x, y


def _transfer_model(optimizer="sgd", lr=0.05, backbone_mult=None, ema=None, **regularizers):
    import keras

    from kerastl.optimizers import make_optimizer
    from kerastl.training.transfer_model import TransferModel

    keras.utils.set_random_seed(0)
    classifier = tiny_classifier()
    model = TransferModel(classifier, **regularizers)
    model.compile(optimizer=make_optimizer(optimizer, lr, ema=ema),
                  backbone_optimizer=make_optimizer(optimizer, lr * backbone_mult, ema=ema) if backbone_mult else None,
                  loss=keras.losses.CategoricalCrossentropy())
    return classifier, model


@pytest.mark.parametrize("backbone_mult", [None, 0.5])
def test_ema_leaves_the_moving_average_of_the_weights(backbone_mult):
    """With `ema`, the phase ends with each weight's moving average (of every step's weights,
    Keras' formula) in its place, for the head's and the backbone's optimizer alike."""
    import keras

    from kerastl.training.finetune import averaged_at_end

    momentum = 0.6
    classifier, model = _transfer_model(backbone_mult=backbone_mult, ema=momentum)
    trained = model.trainable_variables
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([v.numpy().copy() for v in trained])

    x, y = _batches()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[averaged_at_end(), Record()])
    expected = seen[0]
    for step in seen[1:]:
        expected = [momentum * a + (1 - momentum) * w for a, w in zip(expected, step)]
    last = seen[-1]
    for variable, average, raw in zip(trained, expected, last):
        np.testing.assert_allclose(variable.numpy(), average, rtol=1e-5, atol=1e-6)
    assert max(np.abs(a - r).max() for a, r in zip(expected, last)) > 1e-3  # the average is not the last step


def test_ema_in_a_run_makes_the_saved_and_evaluated_model(tmp_path):
    """A run with `ema` saves and evaluates the averaged weights. With momentum 0.99999 the
    average stays at the weights after the first step (Keras' average starts there), one
    Adam step (at most ~lr per weight) from the start, while nine steps move them further;
    and the saved model scores what metrics.json says."""
    from kerastl.predict import evaluate_run
    from kerastl.training.job import train

    lr = 0.01
    cfg, start = _from_weights_file(tmp_path, {"head_epochs": 0, "epochs": 3, "lr": lr, "backbone_lr_mult": 1.0,
                                               "ema": 0.99999})
    result = train(cfg, out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)
    saved = _backbone_of(result.run_dir)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(saved.trainable_weights, start.trainable_weights))
    assert 1e-4 < moved < 1.5 * lr
    again = evaluate_run(str(result.run_dir), split="test")
    assert again["accuracy"] == pytest.approx(result.metrics["target_test"]["accuracy"], abs=1e-6)


def _from_weights_file(tmp_path, finetune: dict):
    """A fine-tuning-only tiny config whose backbone starts from a weights file written
    here, and that backbone (the start weights)."""
    from kerastl.config import config_from_dict
    from kerastl.models.factory import build_classifier

    cfg = config_from_dict(tiny_config(source=None, model={"bn": "train"}, train={"finetune": finetune}))
    start = build_classifier(cfg.model, 10).backbone
    start.save_weights(tmp_path / "start.weights.h5")
    cfg.model.weights = str(tmp_path / "start.weights.h5")
    return cfg, start


def _backbone_of(run_dir):
    from kerastl import runs
    from kerastl.models.factory import nested_backbone

    return nested_backbone(runs.load_model(run_dir))


def test_learning_rate_factors_scale_each_variables_step():
    import keras
    import tensorflow as tf

    from kerastl.optimizers import make_optimizer

    for name in ("sgd", "adam"):
        variables = [keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))]
        optimizer = make_optimizer(name, 0.1)
        optimizer.build(variables)
        optimizer.scale_learning_rates([(variables[1], 0.25)])
        optimizer.apply([tf.ones(3), tf.ones(3)], variables)
        full, quarter = 1 - variables[0].numpy(), 1 - variables[1].numpy()
        np.testing.assert_allclose(quarter, 0.25 * full, rtol=1e-5)


def test_block_depths_follow_the_layer_names():
    """MobileNetV3 (the default job's backbone): the stem is block 0, each expanded_conv
    block one deeper, the top convolution in the last; depths never go down."""
    import keras

    from kerastl.models.blocks import block_depths, layer_decay_factors

    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                   alpha=0.75, minimalistic=True)
    depths = block_depths(backbone, "MobileNetV3")
    order = [depths[layer.name] for layer in backbone.layers]
    assert order == sorted(order) and max(order) == 11
    assert depths["conv"] == 0 and depths["expanded_conv_depthwise"] == 1
    assert depths["expanded_conv_10_project"] == 11 and depths["conv_1"] == 11
    factors = dict((id(v), f) for v, f in layer_decay_factors(backbone, "MobileNetV3", 0.5))
    assert factors[id(backbone.get_layer("conv").kernel)] == 0.5 ** 11
    assert factors[id(backbone.get_layer("conv_1").kernel)] == 1.0


@pytest.mark.slow
def test_every_family_has_blocks():
    """Each backbone family kerastl lists is cut into several blocks of its own naming."""
    import keras

    from kerastl.models.backbones import BACKBONES
    from kerastl.models.blocks import block_depths

    smallest = {}
    for name in BACKBONES.names():
        spec = BACKBONES.get(name)
        smallest.setdefault(spec.family, spec)
    for family, spec in smallest.items():
        size = spec.min_size
        backbone = spec.constructor()(include_top=False, weights=None, input_shape=(size, size, 3))
        depths = [block_depths(backbone, family)[layer.name] for layer in backbone.layers]
        # In layer order depths only grow, except where parallel branches (NASNet's cells)
        # alternate between neighbouring blocks.
        assert min(np.diff(depths)) >= (-1 if family == "NASNet" else 0), family
        assert max(depths) >= 5, family
        keras.backend.clear_session()


def test_layer_decay_in_a_run_slows_the_stem(tmp_path):
    """layer_decay 0.01 leaves the stem (block 0 of 11) at 1e-22 of the backbone's rate: it
    keeps its starting weights while the last block moves as much as without decay."""
    from kerastl.training.job import train

    cfg, start = _from_weights_file(tmp_path, {"head_epochs": 0, "epochs": 2, "lr": 0.01, "backbone_lr_mult": 1.0,
                                               "layer_decay": 0.01})
    result = train(cfg, out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)
    trained = _backbone_of(result.run_dir)

    def moved(name):
        return float(np.abs(trained.get_layer(name).kernel.numpy() - start.get_layer(name).kernel.numpy()).max())

    assert moved("conv") < 1e-9 and moved("expanded_conv_depthwise") < 1e-9
    assert moved("conv_1") > 1e-2


def test_l2_sp_keeps_the_backbone_near_its_start():
    x, y = _batches(n=6)

    def distance(l2_sp):
        classifier, model = _transfer_model(lr=0.05, l2_sp=l2_sp)
        start = [v.numpy().copy() for v in classifier.backbone.trainable_variables]
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        return sum(float(np.sum((v.numpy() - s) ** 2)) for v, s in zip(classifier.backbone.trainable_variables, start))

    free, held = distance(0.0), distance(20.0)
    assert held < 0.3 * free


def test_l2_sp_start_is_where_the_phase_began():
    classifier, model = _transfer_model(l2_sp=1.0)
    x, y = _batches(n=2)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.anchor()  # a reused model's next phase
    assert float(model.regularization(None)) == 0.0


def test_bss_adds_the_smallest_singular_value_to_the_loss():
    """One step's loss with bss = the loss without + bss x s_min^2 of the batch's features."""
    import tensorflow as tf

    x, y = _batches(n=1)
    losses = {}
    for bss in (0.0, 50.0):
        classifier, model = _transfer_model(bss=bss)
        features = classifier.features(tf.constant(x), training=True).numpy()
        losses[bss] = float(model.train_on_batch(x, y))
    smallest = np.linalg.svd(features, compute_uv=False)[-1]
    assert losses[50.0] - losses[0.0] == pytest.approx(50.0 * smallest**2, rel=1e-3)
    assert 50.0 * smallest**2 > 1e-3


def test_mixup_and_cutmix_mix_labels_in_the_pipeline():
    """The training batches of a split with mixup / cutmix carry mixed (not one-hot) labels
    whose rows still sum to 1; the same seed gives the same batches."""
    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset
    from kerastl.data.splits import Split

    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 255, (32, 32, 32, 3)).astype("uint8"), labels=np.arange(32) % 4)
    for spec in ({"mixup": 0.4}, {"cutmix": 1.0}, {"randaugment": 0.5, "mixup": 0.4}):
        def batches():
            ds = build_dataset(split, 32, 16, 4, training=True, seed=1, augmenter=build_augmenter(spec, "target"),
                               cache=False)
            return [(x.numpy(), y.numpy()) for x, y in ds.take(2)]

        first, again = batches(), batches()
        labels = np.concatenate([y for _, y in first])
        assert np.allclose(labels.sum(axis=1), 1.0)
        assert ((labels > 0) & (labels < 1)).any(axis=1).mean() > 0.5, spec
        for (xa, ya), (xb, yb) in zip(first, again):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_randaugment_is_drawn_from_the_batch_seed():
    """Keras' RandAugment draws from its own generator; the augmenter makes it draw from
    the batch's seed: two seeds, two results; one seed, one result."""
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter

    augmenter = build_augmenter({"randaugment": {"num_ops": 2, "factor": 0.5}}, "target")
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32"))
    a = augmenter(images, tf.constant([1, 2], tf.int64)).numpy()
    b = augmenter(images, tf.constant([1, 2], tf.int64)).numpy()
    c = augmenter(images, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1.0 and np.abs(a - images.numpy()).max() > 1.0


def test_mixup_with_adaptation_is_refused(tmp_path):
    from kerastl.config import config_from_dict
    from kerastl.errors import ConfigError

    data = tiny_config(adapt={"method": "dann"})
    data["source"]["augment"] = {"mixup": 0.2}
    with pytest.raises(ConfigError, match=r"source\.augment\.mixup.*no mixup or cutmix with an adapt section"):
        config_from_dict(data)
