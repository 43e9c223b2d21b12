"""The `kerastl` command: each sub-command parses, loads the config, makes one library call."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from kerastl.errors import KerastlError
from kerastl.export.convert import FORMATS as CONVERT_FORMATS
from kerastl.native_logs import VERBOSE, import_tensorflow_quietly
from kerastl.sweep.scoring import CRITERIA

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


def _tensorflow_quietly(fn):
    """For the commands that run TensorFlow: import it quietly first (`train` does it
    itself, after the config is validated, so a bad config fails without TensorFlow)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import_tensorflow_quietly()
        return fn(*args, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kerastl")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own start-up and C++ log lines.")
def main(verbose):
    """kerastl: transfer learning with keras.applications backbones, from YAML configs.

    \b
    kerastl train                       pretrain + fine-tune the default config
    kerastl train my.yaml --set train.batch_size=32
    kerastl sweep A.yaml B.yaml         adaptation trials, a label-free pick, one model
    kerastl evaluate saved_models/RUN   per-class report and confusion matrix
    kerastl predict saved_models/RUN img.jpg
    kerastl export saved_models/RUN     SavedModel for TF Serving
    kerastl convert saved_models/RUN --quantize int8   TFLite for phones
    kerastl lr-find my.yaml             the loss against the learning rate, a suggested rate
    kerastl rank my.yaml -c RUN -c ResNet50   which starting point fits the target best
    kerastl adapt RUN --target new_images/   adapt a run to new images, no source data
  kerastl backbones                   the backbones you can use
    """
    if verbose:
        VERBOSE["on"] = True
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.ERROR)
    # TensorFlow's Python logger announces every SavedModel asset it writes.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.batch_size=32 or --set source=null. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory to create (default: saved_models/<name>-<timestamp>).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True),
              help="Continue an interrupted run directory from its last finished epoch.")
@click.option("--quiet", is_flag=True, help="No progress bars; the final summary is still printed.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Run as N worker processes on this machine (MultiWorkerMirroredStrategy over "
                   "localhost); output is prefixed per worker and the job fails if one fails.")
@_user_errors
def train(config, overrides, out, resume, quiet, workers):
    """Train on CONFIG (default: the built-in default config).

    With a `source` section: pretrain on the source domain, then fine-tune on the target
    (head first with the backbone frozen, then the unfrozen backbone at a lower learning
    rate), then evaluate on the target's test split. Writes a run directory with
    model.keras, metrics.json, history.csv, labels.txt and the resolved config.yaml.
    """
    from kerastl import runs
    from kerastl.config import load_config
    from kerastl.training.job import train as run_train

    if resume and (config or overrides or out):
        raise KerastlError("--resume continues a run with its own config.yaml; drop CONFIG, --set and --out")
    if workers and workers > 1:
        from kerastl.training.launcher import launch

        args = ["--quiet"] if quiet else []
        if resume:
            run_dir = runs.require_run(resume, need=(runs.CONFIG,))
            strategy = runs.read_config(run_dir).distribute.strategy
            if strategy != "multi_worker":
                raise KerastlError(
                    f"--workers {workers} --resume {resume}: that run was started with distribute.strategy "
                    f"{strategy}, not by --workers; resume it without --workers (N copies would each "
                    "train it on their own)")
            args += ["--resume", resume]
        else:
            cfg = load_config(config, overrides)  # a bad config fails here, once
            out = out or str(runs.new_run_dir(cfg.name, None))
            args += ([config] if config else []) + [f"--set={o}" for o in overrides]
            args += ["--set=distribute.strategy=multi_worker", "--out", out]
        click.echo(f"Starting {workers} workers on localhost ...")
        sys.exit(launch(workers, args, echo=click.echo))
    cfg = None if resume else load_config(config, overrides)
    import_tensorflow_quietly()
    run_train(cfg, out=out, resume=resume, quiet=quiet, echo=click.echo)


@main.command()
@click.argument("configs", metavar="CONFIG...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of every config, e.g. --set adapt.steps=3000. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False),
              help="The sweep folder (default: saved_models/<first config's name>-sweep). Run the same command "
                   "again to resume the sweep, or on another machine to join it.")
@click.option("--trials", default=8, show_default=True, type=click.IntRange(min=1),
              help="Trials in the sweep: trial i runs config i mod (number of configs) with seed `seed + i`.")
@click.option("--space", type=click.Path(dir_okay=False),
              help="A YAML search space: config keys with {low, high[, log]} ranges, lists of values, or "
                   "'declared' for a method parameter's declared range.")
@click.option("--parallel", type=click.IntRange(min=1),
              help="Trials at a time in this process; the cores are split between them. Default: as many as "
                   "the cores hold with the threads each config's train.intra_op_threads asks for (one at a "
                   "time when a config leaves it unset).")
@click.option("--storage", metavar="URL",
              help="A database URL shared by several machines (e.g. postgresql://user:pass@host/db); "
                   "default: a journal file in the sweep folder.")
@click.option("--study", help="The study's name in --storage (default: the sweep folder's name).")
@click.option("--criterion", default="im_agree", show_default=True, type=click.Choice(CRITERIA),
              help="The label-free criterion that picks the trials (see the docs' sweep page).")
@click.option("--ensemble", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many top trials (by --criterion) the shipped model is distilled from (all of "
                   "them when the sweep has fewer).")
@click.option("--distill-steps", default=4500, show_default=True, type=click.IntRange(min=1),
              help="Training steps of the distillation into one model (on the benchmark's sweeps, 4500 "
                   "steps gave 0.9 points more than 1500 on average, for about two minutes more on 2 cores).")
@_user_errors
def sweep(configs, overrides, out, trials, space, parallel, storage, study, criterion, ensemble, distill_steps):
    """Adaptation trials over CONFIGs (one per method), seeds and a search space; a pick and
    one model built without target labels.

    Each trial is an ordinary `kerastl train` run in SWEEP/trials/. Every trial is scored by
    label-free criteria on the same held-back target images; the top trials' averaged
    predictions are distilled into SWEEP/model, a run directory that `kerastl export` and
    `kerastl convert` take like any other. Killed and started again, the sweep keeps its
    finished trials and resumes interrupted ones from their checkpoints.
    """
    from kerastl.sweep.runner import sweep as run_sweep

    run_sweep(list(configs), list(overrides), out=out, trials=trials, space=space, parallel=parallel,
              storage_url=storage, study_name=study, criterion=criterion, ensemble=ensemble,
              distill_steps=distill_steps, echo=click.echo)


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", help="Dataset to evaluate on (folder, tfds:NAME, syndigits, digits); default: the run's target.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--top-k", type=click.IntRange(min=1), help="k for top-k accuracy (default: the run's train.top_k).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_user_errors
@_tensorflow_quietly
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
@click.argument("model", metavar="MODEL", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_user_errors
@_tensorflow_quietly
def predict(model, images, top_k, as_json):
    """Top-k labels with probabilities for IMAGES (files or folders).

    MODEL is a run directory, a .keras file (with labels.txt beside it), a SavedModel
    directory (RUN/serving/<version>), a .tflite or an .onnx file written by kerastl.
    """
    from kerastl.predict import predict_images

    results = predict_images(model, list(images), top_k=top_k)
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
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many classes the top_k_classes/top_k_scores outputs hold.")
@click.option("--max-images", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Test images the export is checked on.")
@click.option("--min-agreement", default=0.999, show_default=True, type=click.FloatRange(0, 1),
              help="Fail (and write nothing) when either signature's top-1 agreement with model.keras is lower.")
@_user_errors
@_tensorflow_quietly
def export(run, top_k, max_images, min_agreement):
    """SavedModel for TF Serving in RUN/serving/<next version>/.

    \b
    Signatures:
      serving_default  image_bytes: string[batch] (JPEG/PNG; REST {"b64": ...})
      serving_images   images: uint8[batch, height, width, 3]
    Outputs: scores, classes, top_k_scores, top_k_classes. Decoding, resizing and the
    backbone's preprocessing run inside the graph. Both signatures are checked against
    model.keras on the run's test images (serving_default on them encoded as PNG) before
    the version is put in place.
    """
    from kerastl.export.serving import export_serving
    from kerastl.export.verify import format_rows

    click.echo("Exporting the SavedModel and checking it against model.keras ...")
    path, row = export_serving(run, top_k=top_k, max_images=max_images, min_agreement=min_agreement)
    click.echo(format_rows([row]))
    click.echo(f"Wrote {path}  (serve with: tensorflow_model_server --rest_api_port=8501 "
               f"--model_name=kerastl --model_base_path={path.parent.resolve()})")
    _refresh_report(run)


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--format", "fmt", default="tflite", show_default=True, type=click.Choice(list(CONVERT_FORMATS)))
@click.option("--quantize", default="none", show_default=True,
              type=click.Choice(["none", "dynamic", "float16", "int8"]),
              help="TFLite weights/activations: float32, dynamic-range int8 weights, float16 weights, "
                   "or full integer (calibrated on the run's training images).")
@click.option("--io-type", default="float32", show_default=True, type=click.Choice(["float32", "uint8", "int8"]),
              help="With --quantize int8: integer input and output tensors (microcontrollers, Edge TPU).")
@click.option("--calibration-size", default=200, show_default=True, type=click.IntRange(min=1),
              help="Training images for int8 calibration.")
@click.option("--min-agreement", type=click.FloatRange(0, 1),
              help="Fail (and write nothing) when top-1 agreement with model.keras is lower "
                   "[default: 0.99; dynamic 0.97; int8 0.95].")
@click.option("--max-images", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Test images the conversion is checked on.")
@_user_errors
@_tensorflow_quietly
def convert(run, fmt, quantize, io_type, calibration_size, min_agreement, max_images):
    """Convert RUN's model to TFLite (RUN/model[-QUANT].tflite) or ONNX (RUN/model.onnx).

    The class names are embedded in the file. The converted model is run on the run's
    test images (LiteRT or onnxruntime) and compared with model.keras: file size, top-1
    agreement, accuracy and latency per image at batch 1 are printed and kept in
    RUN/exports.json.
    """
    from kerastl.export.convert import convert_run
    from kerastl.export.verify import format_rows, read_rows

    path, row, keras_row = convert_run(run, fmt=fmt, quantize=quantize, io_type=io_type,
                                       calibration_size=calibration_size, min_agreement=min_agreement,
                                       max_images=max_images, echo=click.echo)
    in_mediapipe = read_rows(path.parent).get(f"{path.name} (MediaPipe)")
    click.echo(format_rows([keras_row, row] + ([in_mediapipe] if in_mediapipe else [])))
    click.echo(f"Wrote {path}")
    _refresh_report(run)


def _refresh_report(run):
    """A run's report.html, if it has one, takes the new export into its exports table."""
    from kerastl.evaluation.report import REPORT, write_report

    if (Path(run) / REPORT).exists():
        try:
            click.echo(f"Updated {write_report(run)}")
        except Exception as err:  # noqa: BLE001 (the export is done and kept either way)
            click.echo(f"report.html not updated ({type(err).__name__}: {err}); try `kerastl report {run}`", err=True)


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
@click.argument("run", type=click.Path(file_okay=False))
@_user_errors
@_tensorflow_quietly
def report(run):
    """Write RUN/report.html: one self-contained page of the run (config, data, curves,
    metrics, per-class scores, confusion matrix, confidently wrong images, calibration,
    embeddings of adapted runs, exports). `kerastl train` writes it at the end too. For a
    sweep folder: SWEEP/report.html from its results.json."""
    from kerastl import runs

    if runs.is_sweep_dir(run):
        from kerastl.sweep.report import write_report as write_sweep_report
        from kerastl.sweep.study import RESULTS

        if not (Path(run) / RESULTS).exists():
            raise KerastlError(f"{run}: the sweep has no {RESULTS} yet (it is written when its last trial "
                               "finishes; run the sweep's command again to finish it)")
        path = write_sweep_report(run)
    else:
        from kerastl.evaluation.report import write_report

        path = write_report(run)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


@main.command(name="runs")
@click.argument("folder", required=False, default="saved_models", type=click.Path(file_okay=False))
@_user_errors
def list_runs(folder):
    """List the runs in FOLDER (default saved_models/): name, date, backbone, method,
    source -> target, target test accuracy, and whether each finished or can be resumed."""
    from kerastl.evaluation.compare import find_runs, format_runs, summarize

    found = find_runs(folder)
    if not found:
        click.echo(f"no runs in {folder}")
        return
    click.echo(format_runs([summarize(r) for r in found]))


@main.command()
@click.argument("runs_", metavar="RUN RUN...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default="compare.html", show_default=True,
              help="The HTML page with the runs' curves side by side.")
@_user_errors
def compare(runs_, out):
    """Put runs side by side: their metrics as a table here, their curves in one HTML page."""
    from kerastl.evaluation.compare import compare as compare_runs

    table, path = compare_runs(runs_, out)
    click.echo(table)
    click.echo(f"\ncurves: {path}")


@main.command(name="lr-find")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--stage", type=click.Choice(["pretrain", "finetune"]),
              help="The stage whose learning rate to find (default: the config's first).")
@click.option("--from", "start_from", type=click.Path(file_okay=False, exists=True), metavar="RUN",
              help="Start from RUN's model (fine-tuning a config that pretrains: a finished run of it).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=5), help="Steps of the sweep.")
@click.option("--min-lr", default=1e-7, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--max-lr", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for lr_find.png and lr_find.csv (default: saved_models/<name>-lr-find).")
@_user_errors
@_tensorflow_quietly
def lr_find(config, stage, start_from, steps, min_lr, max_lr, overrides, out):
    """The loss as the learning rate grows exponentially, one batch per step, and a
    suggested rate for CONFIG's stage (fastai's lr_find).

    Everything else is the stage's own: model, data, augmentation, optimizer and backbone
    multiplier. Pick a rate where the loss still falls steeply, before its minimum; the
    suggestion is fastai's "valley" rule.
    """
    from kerastl.config import load_config
    from kerastl.training.lr_find import lr_find as find, write

    if min_lr >= max_lr:
        raise KerastlError(f"--min-lr {min_lr:g} must be below --max-lr {max_lr:g}")
    cfg = load_config(config, overrides)
    result = find(cfg, stage=stage, start_from=start_from, steps=steps, min_lr=min_lr, max_lr=max_lr,
                  echo=click.echo)
    png = write(result, Path(out or f"saved_models/{cfg.name}-lr-find"))
    click.echo(f"\n  {len(result.rates)} steps; suggested learning rates for train.{result.stage}.lr:")
    for name, rate in result.suggestions.items():
        click.echo(f"    {name:<14} {rate:.2e}")
    click.echo(f"  plot     {png}\n  try      --set train.{result.stage}.lr={result.suggestions['valley']:.2g}")


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--candidates", "-c", multiple=True, required=True, metavar="RUN|BACKBONE[:WEIGHTS]",
              help="A kerastl run directory, or a keras.applications backbone (e.g. ResNet50, EfficientNetB0:imagenet; "
                   "without :WEIGHTS, the config's model.weights). Repeatable.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key. Repeatable.")
@click.option("--by", default="logme", show_default=True, type=click.Choice(["logme", "h_score", "leep"]),
              help="The score that orders the table (LEEP: run directories only).")
@click.option("--json", "as_json", is_flag=True, help="Print the ranking as JSON.")
@_user_errors
@_tensorflow_quietly
def rank(config, candidates, overrides, by, as_json):
    """Rank starting points for fine-tuning on CONFIG's target without training them.

    Each candidate's features of the target's labelled training images (what fine-tuning
    would train on) are scored by LogME and H-score, run directories also by LEEP (their
    classifier's predictions); higher means the features fit the labels better, which
    tends to mean a better fine-tuned model. Seconds per candidate, not a training each.
    """
    import dataclasses

    from kerastl.config import load_config
    from kerastl.evaluation.rank import format_table, rank as rank_candidates

    cfg = load_config(config, overrides)
    ranked = rank_candidates(cfg, list(candidates), by=by, echo=(lambda s: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in ranked], indent=2))
    else:
        click.echo("")
        click.echo(format_table(ranked, by))


@main.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--target", "dataset", required=True, metavar="DATASET",
              help="The new images: a folder (with or without class sub-folders; labels only evaluate) or a "
                   "built-in dataset name.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory to create (default: saved_models/<name>-shot-<timestamp>).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Epochs over the target images, pseudo-labels recomputed before each.")
@click.option("--beta", default=0.1, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the pseudo-label loss (SHOT used 0.1 on digits, 0.3 on object photos; "
                   "pseudo-labels from a weak model are noisy, and a lower weight trusts them less).")
@click.option("--lr", default=0.005, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Learning rate (SGD, Nesterov momentum 0.9).")
@click.option("--batch-size", type=click.IntRange(min=2), help="Default: the run's train.batch_size.")
@click.option("--selection", default="im", show_default=True, type=click.Choice(["im", "entropy", "bnm", "last"]),
              help="Label-free score on held-back target images that picks the epoch kept; epoch 0, the run "
                   "as it was, is a candidate.")
@click.option("--seed", type=int, help="Default: the run's seed.")
@click.option("--quiet", is_flag=True, help="No per-epoch lines; the final summary is still printed.")
@_user_errors
@_tensorflow_quietly
def adapt(run, dataset, out, epochs, beta, lr, batch_size, selection, seed, quiet):
    """Adapt finished RUN to unlabelled images without its source data (SHOT).

    The run's head stays fixed; its features learn to give the new images confident,
    diverse predictions that agree with clusters in feature space. Writes a new run
    directory (model.keras, metrics.json with the run it started from and the label-free
    scores of every epoch, history.csv) that evaluate, predict, export and convert take.
    """
    from kerastl.training.source_free import adapt_run

    adapt_run(run, dataset, out=out, epochs=epochs, beta=beta, lr=lr, batch_size=batch_size, selection=selection,
              seed=seed, quiet=quiet, echo=click.echo)


@main.command()
def methods():
    """List the domain adaptation methods (adapt.method) and their parameters (adapt.params)."""
    from kerastl.adaptation.catalog import CATALOG

    for name, spec in CATALOG.items():
        click.echo(f"{name:<14}{spec.summary}")
        for key, param in spec.params.items():
            bounds = "" if param.low is None and param.high is None else (
                f" [{param.low if param.low is not None else ''}..{param.high if param.high is not None else ''}]")
            click.echo(f"{'':<14}  {key}={param.default} ({param.type.__name__}{bounds}): {param.help}")


if __name__ == "__main__":
    main()
