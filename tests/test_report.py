"""report.html: every section, images that decode, the numbers of metrics.json; checked in
a real headless browser when one is installed (CI installs Chromium)."""

import base64
import io
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from kerastl.config import config_from_dict
from kerastl.evaluation.report import write_report
from kerastl.training.job import train

from conftest import tiny_config

SECTIONS = ["config", "data", "curves", "metrics", "per-class", "confusion", "wrong", "calibration"]


@pytest.fixture(scope="module")
def adapted(trained_run, tmp_path_factory):
    """A tiny DANN run that writes its report at the end of `train`."""
    cfg = tiny_config(
        target={"labels_per_class": None},
        model={"weights": str(trained_run.run_dir), "bottleneck": 16},
        train={"report": True},
        adapt={"method": "dann", "epochs": 2, "steps_per_epoch": 3, "optimizer": "adam", "lr": 0.001,
               "params": {"hidden": 32}},
    )
    out = tmp_path_factory.mktemp("report") / "run"
    return train(config_from_dict(cfg), out=str(out), quiet=True, echo=lambda s: None)


def _check_page(run, sections):
    page = (run / "report.html").read_text()
    assert (run / "report.html").stat().st_size < 2_000_000
    found = re.findall(r'<section id="([^"]+)"', page)
    assert [s for s in found if s in sections] == sections, found  # all of them, in this order
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    metrics = json.loads((run / "metrics.json").read_text())
    shown = re.findall(r'data-metric="([^"]+)">([^<]+)<', page)
    assert any(key == "target_test.accuracy" for key, _ in shown)
    for key, text in shown:
        value = metrics
        for part in key.split("."):
            value = value[part]
        assert float(text) == pytest.approx(value, abs=5e-5), key
    return page


def test_the_report_of_an_adapted_run_is_written_by_train_with_every_section(adapted):
    page = _check_page(adapted.run_dir, [*SECTIONS, "embedding"])
    assert "adapt / dann" in page and "label-free validator" in page


def test_kerastl_report_writes_the_report_of_a_fine_tuning_run(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run)
    from click.testing import CliRunner

    from kerastl.cli import main

    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    page = _check_page(run, SECTIONS)
    assert "embedding" not in re.findall(r'<section id="([^"]+)"', page)
    assert "pretrain / full" in page


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


# Run by the browser: every image decoded (natural width > 0), and each section's presence.
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
               sections: [...document.querySelectorAll('section')].map(s => s.id),
               metrics: Object.fromEntries([...document.querySelectorAll('[data-metric]')]
                                            .map(e => [e.dataset.metric, e.textContent]))};
  const pre = document.createElement('pre'); pre.id = 'kerastl-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(_browser() is None, reason="no Chromium/Chrome on PATH (CI installs Chromium: .ci/run)")
def test_a_headless_browser_renders_every_section_and_decodes_every_image(adapted, tmp_path):
    page = (adapted.run_dir / "report.html").read_text().replace("</body>", CHECK + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    proc = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="kerastl-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["images"] >= 5 and seen["decoded"] == seen["images"]
    assert [*SECTIONS, "embedding"] == [s for s in seen["sections"] if s != "exports"]
    metrics = json.loads((adapted.run_dir / "metrics.json").read_text())
    assert float(seen["metrics"]["target_test.accuracy"]) == pytest.approx(metrics["target_test"]["accuracy"], abs=5e-5)


def test_runs_lists_finished_and_interrupted_runs_and_compare_puts_them_side_by_side(
        trained_run, adapted, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kerastl.cli import main

    folder = tmp_path / "saved_models"
    folder.mkdir()
    shutil.copytree(trained_run.run_dir, folder / "a-finetune")
    shutil.copytree(adapted.run_dir, folder / "b-dann")
    # An interrupted run: its checkpoint is there, its model and metrics never were.
    shutil.copytree(adapted.run_dir, folder / "c-killed")
    (folder / "c-killed" / "metrics.json").unlink()
    (folder / "c-killed" / "model.keras").unlink()
    assert (folder / "c-killed" / "checkpoint" / "state.json").exists()

    listed = CliRunner().invoke(main, ["runs", str(folder)])
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line for line in listed.output.splitlines()[1:]}
    assert set(lines) == {"a-finetune", "b-dann", "c-killed"}
    accuracy = json.loads((folder / "b-dann" / "metrics.json").read_text())["target_test"]["accuracy"]
    assert "dann" in lines["b-dann"] and "syndigits -> digits" in lines["b-dann"]
    assert f"{accuracy:.4f}" in lines["b-dann"] and "finished" in lines["b-dann"]
    assert "pretrain + fine-tune" in lines["a-finetune"]
    assert "interrupted (resumable" in lines["c-killed"]

    monkeypatch.chdir(tmp_path)
    compared = CliRunner().invoke(main, ["compare", *(str(folder / n) for n in ("a-finetune", "b-dann", "c-killed"))])
    assert compared.exit_code == 0, compared.output
    row = next(line for line in compared.output.splitlines() if line.startswith("target test accuracy"))
    assert f"{accuracy:.4f}" in row and row.rstrip().endswith("-")  # the killed run has no metrics
    page = (tmp_path / "compare.html").read_text()
    assert page.count("<img ") >= 2 and "b-dann" in page

    missing = CliRunner().invoke(main, ["compare", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a kerastl run directory" in missing.output
