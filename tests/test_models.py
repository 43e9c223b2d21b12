import numpy as np
import pytest

import keras

from kerastl.config import ModelConfig
from kerastl.errors import ModelError
from kerastl.models.backbones import BACKBONES, preprocessing_layers
from kerastl.models.factory import build_classifier, nested_backbone, set_trainable
from kerastl.training.transfer_model import TransferModel


def _smallest_per_family():
    chosen = {}
    for name, spec in BACKBONES.items():
        chosen.setdefault(spec.family, name)
    return sorted(chosen.values())


def _fit_one_step(model, size, classes=3, batch=4, lr=1e-3, backbone_lr=1e-4):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(batch) % classes, classes)
    tm = TransferModel(model)
    tm.compile(optimizer=keras.optimizers.SGD(lr), backbone_optimizer=keras.optimizers.SGD(backbone_lr),
               loss="categorical_crossentropy", metrics=["accuracy"],
               run_eagerly=True)  # one step: tracing a big graph costs more than it saves
    history = tm.fit(x, y, epochs=1, batch_size=batch, verbose=0)
    return history.history["loss"][0], np.asarray(model.model(x))


# One train step costs as much as building the model; the step is the same code for every
# family, so it runs for three unlike architectures (depthwise + BN, squeeze-excite +
# stochastic depth, LayerNorm + layer scale), and every family builds and predicts.
TRAINED_FAMILIES = ("MobileNetV2", "EfficientNet", "ConvNeXt")


@pytest.mark.parametrize("name", _smallest_per_family())
def test_every_backbone_family_builds_and_predicts_and_some_train_one_step(name):
    spec = BACKBONES.get(name)
    kwargs = {"alpha": 0.25} if spec.family in ("MobileNet", "MobileNetV2") else {}
    cfg = ModelConfig(backbone=name, weights="none", input_size=spec.min_size, backbone_args=kwargs)
    model = build_classifier(cfg, num_classes=3)
    if spec.family in TRAINED_FAMILIES:
        set_trainable(model.backbone, "all", "train")
        loss, probs = _fit_one_step(model, model.input_size)
        assert np.isfinite(loss)
    else:
        x = np.random.default_rng(0).uniform(0, 255, (4, model.input_size, model.input_size, 3)).astype("float32")
        probs = np.asarray(model.model(x, training=False))
    assert probs.shape == (4, 3) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    keras.backend.clear_session()


def test_every_family_is_covered():
    families = {spec.family for _, spec in BACKBONES.items()}
    assert {"MobileNet", "MobileNetV2", "MobileNetV3", "EfficientNet", "EfficientNetV2", "ResNet",
            "ResNetV2", "ConvNeXt", "DenseNet", "Xception", "InceptionV3", "InceptionResNetV2",
            "NASNet", "VGG"} <= families
    assert len(BACKBONES.names()) >= 40


@pytest.mark.parametrize("mode, module", [("tf", "mobilenet_v2"), ("torch", "densenet"), ("caffe", "resnet50")])
def test_preprocessing_layers_equal_keras_preprocess_input(mode, module):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    out = x
    for layer in preprocessing_layers(mode):
        out = layer(out)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-3)


def _bn_layers(model):
    return [l for l in model.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]


def _small_model(**kw):
    cfg = ModelConfig(backbone="MobileNetV3Small", weights="none", input_size=32,
                      backbone_args={"alpha": 0.75, "minimalistic": True}, bn_momentum=0.5, **kw)
    return build_classifier(cfg, 3)


def test_frozen_backbone_keeps_batchnorm_statistics_and_weights():
    model = _small_model()
    set_trainable(model.backbone, "frozen", "train")
    before = [l.get_weights() for l in _bn_layers(model)]
    conv_before = model.backbone.get_weights()
    _fit_one_step(model, 32, lr=0.05, backbone_lr=0.05)
    for layer, old in zip(_bn_layers(model), before):
        for a, b in zip(layer.get_weights(), old):
            np.testing.assert_array_equal(a, b)  # gamma, beta, moving mean and variance
    for a, b in zip(model.backbone.get_weights(), conv_before):
        np.testing.assert_array_equal(a, b)


def test_partly_frozen_backbone_with_frozen_bn_moves_only_top_weights():
    model = _small_model()
    set_trainable(model.backbone, 10, "frozen")
    bn_before = [l.get_weights() for l in _bn_layers(model)]
    layers = [l for l in model.backbone.layers if l.weights]
    before = {l.name: [w.copy() for w in l.get_weights()] for l in layers}
    _fit_one_step(model, 32, lr=0.05, backbone_lr=0.05)
    for layer, old in zip(_bn_layers(model), bn_before):
        for a, b in zip(layer.get_weights(), old):
            np.testing.assert_array_equal(a, b)
    moved = [l.name for l in layers if any(not np.array_equal(a, b) for a, b in zip(l.get_weights(), before[l.name]))]
    trainable = [l.name for l in layers if l.trainable]
    assert moved and set(moved) <= set(trainable)
    all_layers = [l.name for l in model.backbone.layers]
    assert min(all_layers.index(n) for n in moved) >= len(all_layers) - 1 - 10


def test_trainable_bn_moves_statistics_when_training_from_scratch():
    model = _small_model()
    set_trainable(model.backbone, "all", "train")
    before = [l.get_weights()[2].copy() for l in _bn_layers(model)]  # moving mean
    _fit_one_step(model, 32, lr=0.05, backbone_lr=0.05)
    assert any(not np.array_equal(l.get_weights()[2], b) for l, b in zip(_bn_layers(model), before))


def test_unfreeze_from_named_layer_and_unknown_name():
    model = _small_model()
    names = [l.name for l in model.backbone.layers]
    set_trainable(model.backbone, names[-4], "train")
    assert [l.trainable for l in model.backbone.layers[-4:]] == [True] * 4
    assert not any(l.trainable for l in model.backbone.layers[1:-4] if l.weights)
    with pytest.raises(ModelError, match="model.unfreeze: 'no_such_layer' is not"):
        set_trainable(model.backbone, "no_such_layer", "train")


def test_backbone_learning_rate_multiplier_zero_keeps_backbone_still():
    model = _small_model()
    set_trainable(model.backbone, "all", "train")
    bb = [v.numpy().copy() for v in model.backbone.trainable_variables]
    head = model.model.get_layer("predictions").get_weights()[0].copy()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 0], 3)
    tm = TransferModel(model)
    tm.compile(optimizer=keras.optimizers.SGD(0.1), backbone_optimizer=keras.optimizers.SGD(0.0),
               loss="categorical_crossentropy")
    tm.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for a, b in zip([v.numpy() for v in model.backbone.trainable_variables], bb):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.model.get_layer("predictions").get_weights()[0], head)


def test_weights_from_file_and_missing_file(tmp_path):
    model = _small_model()
    path = tmp_path / "backbone.weights.h5"
    model.backbone.save_weights(path)
    cfg = ModelConfig(backbone="MobileNetV3Small", weights=str(path), input_size=32,
                      backbone_args={"alpha": 0.75, "minimalistic": True})
    again = build_classifier(cfg, 3)
    for a, b in zip(again.backbone.get_weights(), model.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelError, match="model.weights: .*is not 'imagenet', 'none'"):
        build_classifier(ModelConfig(backbone="MobileNetV3Small", weights=str(tmp_path / "nope.h5"), input_size=32), 3)


def test_imagenet_download_failure_says_how_to_place_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    import keras.src.utils.file_utils as file_utils

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    monkeypatch.setattr(keras.utils, "get_file", no_network, raising=False)
    with pytest.raises(ModelError) as err:
        build_classifier(ModelConfig(backbone="MobileNetV2", weights="imagenet", input_size=96), 3)
    msg = str(err.value)
    assert "could not download the ImageNet weights of MobileNetV2" in msg
    assert str(tmp_path / "keras_home" / "models") in msg


def test_input_smaller_than_backbone_minimum_is_an_error():
    with pytest.raises(ModelError, match="too small for Xception; it needs at least 71"):
        build_classifier(ModelConfig(backbone="Xception", input_size=32), 3)


def test_classifier_reloads_in_safe_mode_without_custom_objects(tmp_path):
    model = _small_model(hidden=[8])
    path = tmp_path / "m.keras"
    model.model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model.model(x)), atol=1e-6)


def test_weights_from_a_run_directory_load_its_trained_backbone(trained_run):
    import keras

    from kerastl.config import load_config

    run = trained_run.run_dir
    cfg = load_config(run / "config.yaml").model
    cfg.weights = str(run)
    fresh = build_classifier(cfg, 5)
    trained = keras.saving.load_model(run / "model.keras", compile=False)
    for a, b in zip(fresh.backbone.get_weights(), nested_backbone(trained).get_weights()):
        np.testing.assert_array_equal(a, b)
    assert fresh.model.output_shape == (None, 5)  # a new head for the new task
    cfg.backbone, cfg.backbone_args = "MobileNetV2", {"alpha": 0.35}
    with pytest.raises(ModelError, match="trained a MobileNetV3Small, not a MobileNetV2"):
        build_classifier(cfg, 5)


def test_the_classifier_handle_parts_share_the_models_layers():
    model = _small_model(hidden=[8], dropout=0.2)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model.head(model.features(x))), np.asarray(model.model(x)), atol=1e-6)
    assert model.features.output.shape[-1] == model.backbone.output.shape[-1]
    # Training a part trains the saved model: the head's variables are the model's own.
    ids = {id(v) for v in model.model.weights}
    assert all(id(v) in ids for v in model.head.weights + model.backbone.weights)
    assert model.input_size == 32 and model.spec.name == "MobileNetV3Small"


def test_a_bottleneck_gives_the_features_and_stays_in_the_saved_model(tmp_path):
    model = _small_model(bottleneck=24)
    assert model.features.output.shape[-1] == 24 and model.head.input.shape[-1] == 24
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model.head(model.features(x))), np.asarray(model.model(x)), atol=1e-6)
    model.model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    assert again.get_layer("bottleneck").units == 24
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model.model(x)), atol=1e-6)


def test_infer_is_the_model_in_inference_mode_traced_once_for_any_batch():
    import keras

    from kerastl.models.inference import _TRACED, infer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.BatchNormalization(momentum=0.0)(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dropout(0.5)(h)))
    x = np.random.default_rng(0).normal(3.0, 2.0, (5, 6)).astype("float32")
    model(x, training=True)  # moving statistics away from their initial values
    np.testing.assert_allclose(np.asarray(infer(model, x)), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(infer(model, x)), np.asarray(model(x, training=True)))
    infer(model, x[:2])  # another batch size: the same trace
    assert _TRACED[model].experimental_get_tracing_count() == 1
