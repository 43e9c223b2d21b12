"""AdaBN after a method, measured on finished runs: no training.

For each run directory (from `kerastl train` with an `adapt` section), the saved classifier
(`model.keras`, the kept epoch) is evaluated on the target test split as saved, then again
after every BatchNormalization layer takes the statistics of the target's training images
(`kerastl.training.bn_stats.recalibrate_on_split`, what `adapt.adabn: true` does after the
kept epoch is restored; training does not depend on that option, so the second number is
the run's result had it been on). Writes benchmarks/results/<name>.{md,json}.

    python benchmarks/adabn_after.py RUN_DIR [RUN_DIR ...] [--name adabn_after_method]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def accuracy(model, split, size, num_classes) -> float:
    from kerastl.data.pipeline import build_dataset
    from kerastl.evaluation.metrics import predict_split

    probs, labels = predict_split(model, build_dataset(split, size, 256, num_classes, cache=False))
    return float((probs.argmax(-1) == labels).mean())


def measure(run: Path) -> dict:
    import keras

    from kerastl.training.bn_stats import recalibrate_on_split
    from kerastl.config import load_config
    from kerastl.data.domain import load_domain

    cfg = load_config(str(run / "config.yaml"))
    target = load_domain(cfg.target, cfg.seed, "target")
    model = keras.models.load_model(run / "model.keras", compile=False)
    size = cfg.model.input_size
    before = accuracy(model, target.splits["test"], size, target.num_classes)
    unlabelled = target.splits.get("pool", target.splits["train"])  # the images training/adapt.py uses
    recalibrate_on_split(model, unlabelled, size, cfg.train.batch_size, target.num_classes)
    after = accuracy(model, target.splits["test"], size, target.num_classes)
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": run.name, "method": metrics["adaptation"]["method"], "seed": cfg.seed,
            "kept_epoch": metrics["adaptation"]["selection"]["epoch"],
            "selection": metrics["adaptation"]["selection"]["criterion"],
            "recorded": metrics["target_test"]["accuracy"], "as_saved": before, "with_adabn": after}


def table(rows: list[dict]) -> str:
    lines = ["| run | method | seed | kept epoch (by) | target test as saved | after AdaBN | change |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {r['seed']} | {r['kept_epoch']} ({r['selection']}) | "
                     f"{r['as_saved']:.3f} | {r['with_adabn']:.3f} | {r['with_adabn'] - r['as_saved']:+.3f} |")
    return "\n".join(lines + change_summary(rows, "with_adabn", "AdaBN")) + "\n"


def change_summary(rows: list[dict], after: str, what: str) -> list[str]:
    """The table's last line: the mean change from `as_saved` to `after` over the adapted runs
    (benchmarks/refine_after.py's table ends with it too)."""
    adapted = [r[after] - r["as_saved"] for r in rows if r["method"] != "source_only"]
    if not adapted:
        return []
    return ["", f"Adaptation methods ({len(adapted)} runs): mean change {statistics.mean(adapted):+.3f}, "
                f"lower after {what} in {sum(d < 0 for d in adapted)}."]


def write_results(name: str, title: str, payload: dict, table_text: str, note: str = ""):
    """benchmarks/results/<name>.json (the machine and `payload`) and <name>.md (`title`, the
    machine, `note`, `table_text`)."""
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine, **payload}, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(f"# {title}\n\nMachine: {machine}{note}\n\n" + table_text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--name", default="adabn_after_method")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    for run in args.runs:
        rows.append(measure(run))
        print(json.dumps(rows[-1]), flush=True)
    write_results(args.name, "AdaBN after each method (`benchmarks/adabn_after.py`)", {"rows": rows}, table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
