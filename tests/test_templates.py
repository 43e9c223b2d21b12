"""The configs a user copies for their own photos: they validate as shipped and train end to
end on a generated folder (ImageNet weights swapped for none: this machine is offline; tiny
size and budget so the smoke run stays cheap)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.config import load_config

from conftest import make_image_folder

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CHEAP = ["model.weights=none", "model.input_size=32", "train.batch_size=8", "train.report=false"]


def _train(config, overrides, out):
    args = ["train", str(CONFIGS / config), "--quiet", "--out", str(out)]
    for o in CHEAP + overrides:
        args += ["--set", o]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def test_the_templates_say_what_they_promise():
    ft = load_config(CONFIGS / "photos_finetune.yaml")
    assert (ft.model.weights, ft.model.input_size, ft.source, ft.adapt) == ("imagenet", 224, None, None)
    ad = load_config(CONFIGS / "photos_adapt.yaml")
    assert (ad.model.weights, ad.model.input_size, ad.adapt.method, ad.adapt.selection) == \
        ("imagenet", 224, "dann", "im")


@pytest.mark.slow
def test_the_photo_templates_train_on_a_folder(tmp_path):
    photos = make_image_folder(tmp_path / "photos", per_class=10)
    metrics = _train("photos_finetune.yaml",
                     [f"target.dataset={photos}", "train.finetune.head_epochs=1", "train.finetune.epochs=1",
                      "train.finetune.warmup_epochs=0"], tmp_path / "ft")
    assert metrics["target_test"]["num_examples"] == 4

    source = make_image_folder(tmp_path / "source", per_class=10, seed=1)
    target = make_image_folder(tmp_path / "target", per_class=10, seed=2)
    metrics = _train("photos_adapt.yaml",
                     [f"source.dataset={source}", f"target.dataset={target}", "adapt.epochs=2",
                      "adapt.steps_per_epoch=2"], tmp_path / "adapt")
    assert metrics["adaptation"]["method"] == "dann" and metrics["target_test"]["num_examples"] == 6
