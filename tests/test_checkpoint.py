"""The run checkpoint: one payload for every stage, restored exactly."""

import numpy as np
import pytest

import keras

from conftest import tiny_classifier


def _transfer_model(seed=0):
    from kerastl.training.transfer_model import TransferModel

    keras.utils.set_random_seed(seed)
    classifier = tiny_classifier(3)
    model = TransferModel(classifier)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  backbone_optimizer=keras.optimizers.SGD(1e-2, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy())
    return model, classifier.model


def _data(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 16), 3)
    return x, y


def test_both_optimizers_of_the_backbone_multiplier_model_round_trip(tmp_path):
    from kerastl.training.checkpoint import Checkpoint, training_variables

    x, y = _data()
    model, classifier = _transfer_model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert len(model.optimizers()) == 2 and all(int(o.iterations) == 2 for o in model.optimizers())
    checkpoint = Checkpoint(tmp_path / "run")
    checkpoint.commit(model, classifier, {"phase": "finetune/full", "epoch": 0})

    fresh, fresh_classifier = _transfer_model(seed=5)  # other initial weights
    state = checkpoint.load_state()
    checkpoint.restore_classifier(fresh_classifier, state)
    checkpoint.restore_training(fresh, state)
    for a, b in zip(training_variables(model), training_variables(fresh)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    head_moments = [v for v in fresh.optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert head_moments and any(np.abs(np.asarray(v)).sum() > 0 for v in head_moments)
    # ... so one more step from either gives the same weights (to float rounding: the two
    # models trace their train functions separately).
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    fresh.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_a_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    from kerastl.errors import KerastlError
    from kerastl.training.checkpoint import Checkpoint

    model, classifier = _transfer_model()
    checkpoint = Checkpoint(tmp_path / "run")
    checkpoint.commit(model, classifier, {"phase": "finetune/full", "epoch": 0})
    other = tiny_classifier(3)
    from kerastl.training.transfer_model import TransferModel

    single = TransferModel(other)
    single.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    with pytest.raises(KerastlError, match="training state does not fit this run"):
        checkpoint.restore_training(single, checkpoint.load_state())


def test_run_files_are_written_whole_with_the_usual_file_mode(tmp_path):
    """atomic_write: the file appears complete under its name, no temporary is left, and
    its mode is what any new file gets (0666 minus the umask), not mkstemp's 0600."""
    import os
    import stat

    from kerastl.runs import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "metrics.json", "{}\n")
        atomic_write(tmp_path / "metrics.json", '{"a": 1}\n')
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").read_text() == '{"a": 1}\n'
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
