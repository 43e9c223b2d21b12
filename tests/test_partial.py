"""Class sets that differ: `classes` keeps some of a dataset's classes; a target whose classes
are some of the source's (a partial transfer) trains in the source's numbering and ships
with its own classes; a target class the source lacks is refused by name."""

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_image_folder, tiny_classifier, tiny_config, write_config

from kerastl.cli import main
from kerastl.config import config_from_dict
from kerastl.data.domain import load_domain
from kerastl.errors import DataError
from kerastl.models.factory import restrict_classes
from kerastl.training.validation import restricted


def test_classes_keeps_only_the_named_classes_numbered_in_the_given_order():
    full = load_domain(config_from_dict(tiny_config()).target, 0, "target")
    cfg = config_from_dict(tiny_config(target={"classes": ["7", "2"]}))
    kept = load_domain(cfg.target, 0, "target")
    assert kept.class_names == ["7", "2"]
    for name, split in kept.splits.items():
        assert sorted(set(split.labels)) == [0, 1]
        if name == "train":  # the few labelled ones, drawn from the kept classes
            continue
        # Each kept example is one of the full split's, with its class renumbered.
        own = full.splits[name]
        assert len(split) == int(np.sum(own.labels == 7) + np.sum(own.labels == 2))
        np.testing.assert_array_equal(split.images[split.labels == 0], own.images[own.labels == 7])
    assert len(kept.splits["train"]) == 20  # labels_per_class (10) of each kept class


def test_classes_that_the_dataset_lacks_are_named_in_the_error():
    cfg = config_from_dict(tiny_config(target={"classes": ["3", "cat"]}))
    with pytest.raises(DataError, match=r"target.classes: \['cat'\] not among the classes of 'digits'"):
        load_domain(cfg.target, 0, "target")


def test_the_restricted_model_gives_the_full_models_probabilities_renormalized():
    classifier = tiny_classifier(5)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    full = classifier.model.predict(x, verbose=0)
    small = restrict_classes(classifier.model, [3, 0]).predict(x, verbose=0)
    expected = full[:, [3, 0]] / full[:, [3, 0]].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(small, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(restricted(full, [3, 0]), expected, rtol=1e-6)


@pytest.mark.parametrize("outputs", ["target", "source"])
def test_a_partial_target_trains_on_the_source_classes_and_ships_its_own(outputs, tmp_path):
    import keras

    cfg = tiny_config(target={"classes": ["0", "1", "2"], "labels_per_class": 5},
                      model={"partial_outputs": outputs},
                      train={"pretrain": {"epochs": 1, "lr": 0.005}, "finetune": {"head_epochs": 0, "epochs": 1}})
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", write_config(tmp_path / "c.yaml", cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "partial transfer: the target has 3 of the source's 10 classes" in result.output
    names = (out / "labels.txt").read_text().split()
    model = keras.saving.load_model(out / "model.keras", compile=False)
    metrics = json.loads((out / "metrics.json").read_text())
    if outputs == "target":
        assert names == ["0", "1", "2"] and model.output.shape[-1] == 3
        assert "3 classes (the target's, of the source's 10)" in result.output
    else:
        assert names == [str(i) for i in range(10)] and model.output.shape[-1] == 10
    # Evaluated on the target's test images of its three classes, with what the model outputs.
    full = load_domain(config_from_dict(tiny_config()).target, 0, "target")
    assert metrics["target_test"]["num_examples"] == int(np.isin(full.splits["test"].labels, [0, 1, 2]).sum())
    assert metrics["source_val"]["num_examples"] > 0  # the source keeps its ten classes


def test_a_target_class_the_source_lacks_is_refused_with_both_class_lists(tmp_path):
    data = make_image_folder(tmp_path / "digits", classes=("0", "1", "ten"))
    cfg = tiny_config(target={"dataset": str(data), "labels_per_class": None})
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", write_config(tmp_path / "c.yaml", cfg), "--out", str(out)])
    assert result.exit_code == 2
    assert "has classes the source lacks: ['ten']" in result.output and "target.classes" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_evaluate_scores_a_run_on_data_with_some_of_its_classes(trained_run, tmp_path):
    data = make_image_folder(tmp_path / "two", classes=("3", "7"), per_class=10)
    result = CliRunner().invoke(main, ["evaluate", str(trained_run.run_dir), "--data", str(data), "--split", "train",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10)  # the run's classes
    rows = cm.sum(axis=1)
    assert rows[3] > 0 and rows[7] > 0 and rows.sum() == rows[3] + rows[7]  # matched by name


def test_the_same_classes_in_another_order_take_the_sources_order():
    from kerastl.data.domain import keep_classes
    from kerastl.training.job import _check_classes

    cfg = config_from_dict(tiny_config())
    target = load_domain(cfg.target, 0, "target")
    order = [str(i) for i in (3, 1, 2, 0, 4, 5, 6, 7, 8, 9)]
    names, splits = keep_classes(target.class_names, target.splits, order, "target.classes", "digits")
    shuffled = type(target)(name="digits", class_names=names, splits=splits)
    trained, partial = _check_classes(cfg, target, shuffled)
    assert partial is None and trained.class_names == target.class_names
    for split in ("val", "test"):  # every image is back under its own class's number
        np.testing.assert_array_equal(trained.splits[split].labels, target.splits[split].labels)
        np.testing.assert_array_equal(trained.splits[split].images, target.splits[split].images)


@pytest.mark.parametrize("outputs", ["target", "source"])
def test_pada_in_a_partial_run_weighs_the_classes_the_target_lacks_zero(outputs, trained_run, tmp_path, caplog):
    from kerastl.training.job import train

    cfg = tiny_config(target={"classes": ["0", "1", "2"], "labels_per_class": None},
                      model={"weights": str(trained_run.run_dir), "partial_outputs": outputs},
                      adapt={"method": "pada", "epochs": 1, "steps_per_epoch": 3, "optimizer": "adam", "lr": 0.001,
                             "params": {"hidden": 16}})
    with caplog.at_level(logging.WARNING, logger="kerastl"):
        result = train(config_from_dict(cfg), out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)
    rows = [row for row in result.history if row["stage"] == "adapt"]
    # The run's own class list, not an estimate from three steps' predictions (which starts at 1).
    assert rows and all(row["class_weight_min"] == 0.0 for row in rows)
    # Kept, the columns of the classes the target lacks are untrained: the user is told.
    assert ("outputs for them (model.partial_outputs: source) are not trained" in caplog.text) == (outputs == "source")
