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

    # The adaptation template's target: a folder of images without labels (no class folders).
    source = make_image_folder(tmp_path / "source", per_class=10, seed=1)
    labelled_target = make_image_folder(tmp_path / "labelled_target", per_class=10, seed=2)
    target = tmp_path / "target"
    target.mkdir()
    for image in sorted(labelled_target.rglob("*.png")):
        image.rename(target / image.name)
    out = tmp_path / "adapt"
    metrics = _train("photos_adapt.yaml",
                     [f"source.dataset={source}", f"target.dataset={target}", "adapt.epochs=2",
                      "adapt.steps_per_epoch=2", "train.report=true"], out)
    assert metrics["adaptation"]["method"] == "dann"
    assert metrics["adaptation"]["selection"]["criterion"] == "im"  # label-free, on held-back target images
    assert "target_test" not in metrics and "target_val" not in metrics  # nothing to score without labels
    assert (out / "labels.txt").read_text().split() == ["cat", "dog"]  # the source's classes
    assert "(no label)" in (out / "report.html").read_text()

    cli = CliRunner()
    result = cli.invoke(main, ["evaluate", str(out)])
    assert result.exit_code == 2 and "its images have no labels" in result.output
    result = cli.invoke(main, ["predict", str(out), str(target)])
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 20
    # Without an adapt section, images without labels cannot be trained on.
    result = cli.invoke(main, ["train", str(CONFIGS / "photos_finetune.yaml"), "--set", f"target.dataset={target}",
                               "--set", "model.weights=none"])
    assert result.exit_code == 2 and "can only be the target of adaptation" in result.output
