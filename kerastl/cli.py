"""The `kerastl` command: each sub-command parses, loads the config, makes one library call."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import click

from kerastl.errors import KerastlError

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise to a CLI user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _user_errors(fn):
    """A KerastlError is the user's to fix: one message, exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KerastlError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kerastl")
def main():
    """kerastl: transfer learning with keras.applications backbones, from YAML configs.

    \b
    kerastl train                       pretrain + fine-tune the default config
    kerastl train my.yaml --set train.batch_size=32
    kerastl evaluate saved_models/RUN   per-class report and confusion matrix
    kerastl predict saved_models/RUN img.jpg
    kerastl backbones                   the backbones you can use
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.ERROR)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.batch_size=32 or --set source=null. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory to create (default: saved_models/<name>-<timestamp>).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True),
              help="Continue an interrupted run directory from its last finished epoch.")
@click.option("--quiet", is_flag=True, help="No progress bars; the final summary is still printed.")
@_user_errors
def train(config, overrides, out, resume, quiet):
    """Train on CONFIG (default: the built-in default config).

    With a `source` section: pretrain on the source domain, then fine-tune on the target
    (head first with the backbone frozen, then the unfrozen backbone at a lower learning
    rate), then evaluate on the target's test split. Writes a run directory with
    model.keras, metrics.json, history.csv, labels.txt and the resolved config.yaml.
    """
    from kerastl.config import load_config
    from kerastl.training.trainer import train as run_train

    if resume and (config or overrides or out):
        raise KerastlError("--resume continues a run with its own config.yaml; drop CONFIG, --set and --out")
    cfg = None if resume else load_config(config, overrides)
    run_train(cfg, out=out, resume=resume, quiet=quiet, echo=click.echo)


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", help="Dataset to evaluate on (folder, tfds:NAME, syndigits, digits); default: the run's target.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--top-k", type=int, help="k for top-k accuracy (default: the run's train.top_k).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_user_errors
def evaluate(run, data, split, top_k, as_json):
    """Accuracy, top-k, per-class precision/recall/F1 and a confusion matrix for RUN.

    The report is printed and added to RUN/evaluation.json.
    """
    from kerastl.evaluation.metrics import format_report
    from kerastl.predict import evaluate_run

    report = evaluate_run(run, data=data, split=split, top_k=top_k)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        names = [r["class"] for r in report["per_class"]]
        click.echo(format_report(report, names, f"{report['data']} ({split} split), run {run}"))


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_user_errors
def predict(run, images, top_k, as_json):
    """Top-k labels with probabilities for IMAGES (files or folders) with RUN's model."""
    from kerastl.predict import predict_images

    results = predict_images(run, list(images), top_k=top_k)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        if "error" in r:
            click.echo(f"{r['image']}\tERROR {r['error']}")
        else:
            preds = "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"])
            click.echo(f"{r['image']}\t{preds}")


@main.command()
@click.option("--family", help="Only this family (e.g. EfficientNet).")
def backbones(family):
    """List the keras.applications backbones, their default input size and preprocessing."""
    from kerastl.models.backbones import BACKBONES

    click.echo(f"{'name':<20}{'family':<20}{'default size':>12}{'min size':>10}  preprocessing")
    for name, spec in BACKBONES.items():
        if family and spec.family.lower() != family.lower():
            continue
        pre = "inside the model" if spec.preprocessing == "none" else f"'{spec.preprocessing}' mode"
        click.echo(f"{name:<20}{spec.family:<20}{spec.default_size:>12}{spec.min_size:>10}  {pre}")


@main.command()
def methods():
    """List the domain adaptation methods (adapt.method) and their parameters (adapt.params)."""
    from kerastl.adaptation import METHODS

    for name, cls in METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        params = ", ".join(f"{k}={v}" for k, v in cls.HPARAMS.items()) or "none"
        click.echo(f"{name:<14}{doc}\n{'':<14}params: {params}")


if __name__ == "__main__":
    main()
