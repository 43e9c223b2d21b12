"""What every benchmark script shares: where results go, a description of the machine they
were measured on, and writing one results table (<name>.md) with its data (<name>.json)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# The default job's fine-tuning as the tables that run it were measured with (80 epochs,
# geometric target augmentation, before MixUp and the longer schedule joined the default):
# those scripts pass these overrides, so their tables do not move with configs/default.yaml.
PINNED_FINETUNE = ["train.finetune.epochs=80", "target.augment={rotate: 0.03, zoom: 0.1, translate: 0.08}"]


def machine_info() -> dict:
    """CPU model, cores, Python, TensorFlow and Keras versions, and the load at the start."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "tensorflow": md.version("tensorflow"), "keras": md.version("keras"),
            "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def machine() -> str:
    """One line for a table's header: `2 cores of AMD EPYC ..., tensorflow 2.21.0, ...`."""
    m = machine_info()
    return (f"{m['cores']} cores of {m['cpu']} ({m['machine']}), Python {m['python']}, tensorflow {m['tensorflow']}, "
            f"keras {m['keras']}")


def write_results(name: str, lines: list[str], payload: dict) -> None:
    """benchmarks/results/<name>.md (the table's lines) and <name>.json (the machine and
    `payload`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine_info(), **payload}, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines).rstrip() + "\n")
