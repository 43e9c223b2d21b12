"""Checks an exported model against the run's Keras model on the run's test images.

Every artifact (SavedModel, .tflite, .onnx) is run on the same images as `model.keras`;
the check measures top-1 agreement, accuracy, the largest score difference, file size
and latency per image at batch 1. The rows are kept in RUN/exports.json, as a table in
RUN/exports.txt, and printed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError

EXPORTS = "exports.json"
EXPORTS_TABLE = "exports.txt"


@dataclasses.dataclass
class CheckImages:
    images: np.ndarray  # (N, size, size, 3) float32, 0..255
    labels: np.ndarray  # (N,) int
    source: str  # e.g. "digits:test"


def run_images(run: Path, size: int, split: str = "test", max_images: int | None = 1000,
               which: str = "target") -> CheckImages:
    """Decoded, resized images of one split of the run's target (or source) domain."""
    from kerastl.data.pipeline import build_dataset

    cfg = runs.read_config(run)
    domain = _domain(str(run), (run / runs.CONFIG).read_text(), which)
    if split not in domain.splits:
        split = "val" if "val" in domain.splits else "train"
    part = domain.splits[split]
    if max_images is not None and len(part) > max_images:
        part = part.subset(np.random.default_rng(cfg.seed).permutation(len(part))[:max_images])
    # An unlabelled adaptation target: the run's classes, every label -1 (no accuracy).
    labelled = domain.labelled
    ds = build_dataset(part, size, 64, domain.num_classes if labelled else len(runs.read_labels(run)), cache=False)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(np.argmax(y.numpy(), axis=1) if labelled else np.full(len(x), -1))
    return CheckImages(np.concatenate(xs), np.concatenate(ys), f"{domain.name}:{split}")


def keras_reference(run: Path, max_images: int | None = 1000):
    """(KerasArtifact of RUN/model.keras, the run's check images, its probabilities on them):
    what every export is compared with."""
    from kerastl.export.artifacts import KerasArtifact

    keras_model = KerasArtifact(run / runs.MODEL, runs.read_labels(run))
    data = run_images(run, keras_model.size, max_images=max_images)
    return keras_model, data, keras_model.predict(data.images)


@functools.lru_cache(maxsize=2)
def _domain(run: str, config_text: str, which: str):
    """The run's domain, loaded once for the test images and the int8 calibration images."""
    from kerastl.data.domain import load_domain

    cfg = runs.read_config(run)
    return load_domain(cfg.target if which == "target" else cfg.source, cfg.data_seed, which)


def compare(artifact, reference_probs: np.ndarray | None, data: CheckImages, latency_images: int = 50,
            probs: np.ndarray | None = None) -> dict:
    """The table row of `artifact`; `probs`: its predictions on `data` if already made.

    `reference_probs=None` makes the reference's own row: accuracy, size and latency, with
    no agreement (it would be 1.0 by construction); `latency_images=0` skips timing.
    """
    if probs is None:
        probs = artifact.predict(data.images)
    top = probs.argmax(axis=1)
    return {
        "format": artifact.format,
        "file": str(artifact.path),
        "size_mb": round(artifact.size_bytes / 2**20, 3),
        "agreement": None if reference_probs is None else float(np.mean(top == reference_probs.argmax(axis=1))),
        "accuracy": float(np.mean(top == data.labels)) if np.all(data.labels >= 0) else None,
        "max_score_diff": None if reference_probs is None else float(np.max(np.abs(probs - reference_probs))),
        "latency_ms": round(artifact.latency_ms(data.images, latency_images), 3) if latency_images else None,
        "images": data.source + f" ({len(data.labels)})",
    }


def record(run: Path, key: str, row: dict | None):
    """Adds `row` under `key` in RUN/exports.json (atomically); None removes the key's row."""
    rows = runs.update_json(run / EXPORTS, key, row)
    runs.atomic_write(run / EXPORTS_TABLE, format_rows(list(rows.values())) + "\n")


def read_rows(run: Path) -> dict:
    """RUN/exports.json: {key: row}, empty when nothing was exported yet."""
    path = Path(run) / EXPORTS
    return json.loads(path.read_text()) if path.exists() else {}


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'format':<12}{'file':<28}{'size MB':>9}{'agreement':>11}{'accuracy':>10}"
             f"{'max |dp|':>10}{'ms/image':>10}"]
    for r in rows:
        name = Path(r["file"]).name if not Path(r["file"]).is_dir() else str(Path(*Path(r["file"]).parts[-2:]))
        agreement = "reference" if r["agreement"] is None else f"{r['agreement']:.4f}"
        diff = "-" if r["max_score_diff"] is None else f"{r['max_score_diff']:.2g}"
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"  # None: images without labels
        lines.append(f"{r['format']:<12}{name:<28}{r['size_mb']:>9.3f}{agreement:>11}"
                     f"{accuracy:>10}{diff:>10}{latency:>10}")
        if r.get("calibration"):
            lines.append(f"{'':<12}int8 calibrated on {r['calibration']}")
    return "\n".join(lines)


def require_agreement(row: dict, floor: float, what: str):
    if row["agreement"] < floor:
        raise KerastlError(
            f"{what}: top-1 agreement with the Keras model is {row['agreement']:.4f} on "
            f"{row['images']}, under the floor {floor}; nothing was written. Lower the floor with "
            "--min-agreement if that is acceptable, or try another --quantize mode"
        )
