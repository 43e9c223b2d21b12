"""`kerastl evaluate` and `kerastl predict`: use a finished run's model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.data.images import IMAGE_EXTENSIONS
from kerastl.errors import DataError, KerastlError


def input_size(model) -> int:
    return int(model.input_shape[1])


def evaluate_run(run_path: str, data: str | None = None, split: str = "test", top_k: int | None = None) -> dict:
    """Full report (accuracy, top-k, per-class P/R/F1, confusion matrix) on a split.

    Args:
        run_path: run directory.
        data: dataset to evaluate on (as in the config's `dataset` key); default the run's
            target dataset.
        split: train, val or test.
    """
    from kerastl.data.domain import load_domain, onto_classes
    from kerastl.data.pipeline import build_dataset
    from kerastl.evaluation.metrics import full_report
    from kerastl.models.inference import predict_split

    run = runs.require_run(run_path, need=(runs.MODEL, runs.CONFIG, runs.LABELS))
    cfg = runs.read_config(run)
    labels = runs.read_labels(run)
    data_cfg = cfg.target
    if data:
        data_cfg = dataclasses.replace(data_cfg, dataset=data, labels_per_class=None, classes=None)
    domain = load_domain(data_cfg, cfg.data_seed, "--data" if data else "target")
    if not domain.labelled:
        raise DataError(f"{'--data ' if data else 'the run target '}{domain.name}: its images have no labels "
                        "(no class sub-folders), so there is nothing to score; give --data a folder with one "
                        "sub-folder per class (kerastl predict shows the model's labels for unlabelled images)")
    domain = onto_classes(domain, labels, "--data" if data else "the run's target")
    if split not in domain.splits:
        raise DataError(f"--split {split}: {domain.name} has no such split (has: {', '.join(domain.splits)})")
    model = runs.load_model(run)
    ds = build_dataset(domain.splits[split], input_size(model), cfg.train.batch_size,
                       len(labels), cache=False)
    probs, y = predict_split(model, ds)
    report = full_report(probs, y, labels, top_k or cfg.train.top_k)
    report["data"] = domain.name
    report["split"] = split
    runs.update_json(run / "evaluation.json", f"{domain.name}:{split}", report)
    return report


def collect_images(paths: tuple[str, ...] | list[str]) -> list[str]:
    files = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(
                str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise KerastlError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise KerastlError(f"{p}: no such image file or folder")
    return files


def predict_images(target: str, images: list[str], top_k: int = 3, batch_size: int = 32) -> list[dict]:
    """Top-k labels with probabilities for each image file.

    `target` is a run directory, a .keras file, a SavedModel directory, a .tflite or an
    .onnx file: every format gets the same images and gives the same labels. Files that
    cannot be decoded get an `error` entry instead of predictions.
    """
    import tensorflow as tf

    from kerastl.data.images import read_rgb
    from kerastl.data.pipeline import resize
    from kerastl.export.artifacts import load_artifact

    model = load_artifact(target)
    files = collect_images(images)
    labels = model.labels
    k = min(top_k, len(labels))
    results: list[dict] = []
    decoded, order = [], []
    for path in files:
        try:
            decoded.append(resize(tf.constant(read_rgb(path)), model.size).numpy())
            order.append(len(results))
            results.append({"image": path})
        except Exception as err:
            results.append({"image": path, "error": f"{type(err).__name__}: {err}"})
    good = [results[i]["image"] for i in order]
    for start in range(0, len(decoded), batch_size):
        probs = model.predict_files(decoded[start : start + batch_size], good[start : start + batch_size])
        for row, idx in zip(probs, order[start : start + batch_size]):
            top = np.argsort(-row)[:k]
            results[idx]["predictions"] = [
                {"label": labels[i], "probability": float(row[i])} for i in top
            ]
    return results
