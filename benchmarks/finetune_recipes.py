"""Fine-tuning recipes on the default job: each regularizer against plain fine-tuning.

Runs configs/default.yaml (pretrain on syndigits, fine-tune on N labels per class of the
handwritten digits) with a pinned recipe ("plain": 80 fine-tuning epochs, geometric
augmentation) and with one recipe change at a time, for several seeds, and writes each
variant's target test accuracy (per seed, mean, the difference to plain with the same
seeds) and wall time to benchmarks/results/<name>.{json,md}. Runs already in a merged
file are not repeated.

    python benchmarks/finetune_recipes.py --seeds 0 1 2 3 4 [--variants plain ema mixup]
        [--labels 10] [--name finetune_recipes] [--merge finetune_recipes]

Every run is a whole `kerastl train` process, so times include start-up, pretraining and
evaluation, as a user sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PINNED_FINETUNE, machine, write_results

AUGMENT = "rotate: 0.03, zoom: 0.1, translate: 0.08"  # the default job's geometric target augmentation
# The recipe every variant changes one thing of (common.PINNED_FINETUNE), pinned so that the
# tables do not move when the default job does.
BASE = PINNED_FINETUNE

VARIANTS = {
    "plain": [],
    "default": [],  # configs/default.yaml as it is now
    "scratch": ["source=null"],
    "ema": ["train.finetune.ema=0.9"],
    "ema95": ["train.finetune.ema=0.95"],
    "mixup": [f"target.augment={{{AUGMENT}, mixup: 0.2}}"],
    "cutmix": [f"target.augment={{{AUGMENT}, cutmix: 1.0}}"],
    "randaugment": ["target.augment={randaugment: {num_ops: 2, factor: 0.3}}"],
    "l2sp": ["train.finetune.l2_sp=0.01"],
    "l2sp1": ["train.finetune.l2_sp=1.0"],
    "layer_decay": ["train.finetune.layer_decay=0.8"],
    "bss": ["train.finetune.bss=0.001"],
    "bss01": ["train.finetune.bss=0.01"],
    "bss_mixup": ["train.finetune.bss=0.001", f"target.augment={{{AUGMENT}, mixup: 0.2}}"],
    "bss_l2sp": ["train.finetune.bss=0.001", "train.finetune.l2_sp=0.01"],
    # twice the fine-tuning steps: pretraining dominates the job's time, so this costs little
    "long": ["train.finetune.epochs=160"],
    "mixup_long": [f"target.augment={{{AUGMENT}, mixup: 0.2}}", "train.finetune.epochs=160"],
    "bss_mixup_long": ["train.finetune.bss=0.001", f"target.augment={{{AUGMENT}, mixup: 0.2}}",
                       "train.finetune.epochs=160"],
    "long240": ["train.finetune.epochs=240"],
    "long_bss": ["train.finetune.bss=0.001", "train.finetune.epochs=160"],
    "long_ema": ["train.finetune.ema=0.99", "train.finetune.epochs=160"],
    "mixup4_long": [f"target.augment={{{AUGMENT}, mixup: 0.4}}", "train.finetune.epochs=160"],
    # pretraining with the adaptation configs' photometric source augmentation
    "photometric": [f"source.augment={{{AUGMENT}, contrast: 0.7, brightness: 0.3}}"],
    "photometric_mixup": [f"source.augment={{{AUGMENT}, contrast: 0.7, brightness: 0.3}}",
                          f"target.augment={{{AUGMENT}, mixup: 0.2}}"],
    # semi-supervised: MME with the same labels plus the unlabelled target images (another config)
    "mme": [],
}
# variants that run a config of their own instead of the default job
CONFIGS = {"mme": "configs/digits_mme.yaml"}
UNPINNED = {"default", *CONFIGS}  # run without BASE


def run(variant: str, seed: int, labels: int, workdir: Path) -> dict:
    out = workdir / f"{variant}-{labels}-{seed}"
    config = [str(Path(__file__).parents[1] / CONFIGS[variant])] if variant in CONFIGS else []
    cmd = [sys.executable, "-m", "kerastl", "train", *config, "--quiet", "--out", str(out),
           "--set", f"seed={seed}", "--set", f"target.labels_per_class={labels}", "--set", "train.report=false"]
    for override in ([] if variant in UNPINNED else BASE) + VARIANTS[variant]:
        cmd += ["--set", override]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    metrics = json.loads((out / "metrics.json").read_text())
    return {"variant": variant, "labels": labels, "seed": seed, "seconds": round(time.time() - start, 1),
            "target_test_accuracy": metrics["target_test"]["accuracy"]}


def summarize(rows: list) -> list:
    """One entry per (labels, variant): mean, stdev, and the mean difference to plain over the
    seeds both have."""
    out = []
    for labels in sorted({r["labels"] for r in rows}):
        plain = {r["seed"]: r for r in rows if r["labels"] == labels and r["variant"] == "plain"}
        for variant in [v for v in VARIANTS if any(r["variant"] == v and r["labels"] == labels for r in rows)]:
            mine = sorted((r for r in rows if r["labels"] == labels and r["variant"] == variant),
                          key=lambda r: r["seed"])
            accs = [r["target_test_accuracy"] for r in mine]
            paired = [r for r in mine if r["seed"] in plain]
            out.append({
                "labels": labels, "variant": variant, "overrides": VARIANTS[variant],
                "seeds": [r["seed"] for r in mine], "accuracies": accs,
                "mean": statistics.mean(accs), "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "vs_plain": (statistics.mean(r["target_test_accuracy"] - plain[r["seed"]]["target_test_accuracy"]
                                             for r in paired) if paired else None),
                "wins": sum(r["target_test_accuracy"] > plain[r["seed"]]["target_test_accuracy"] for r in paired),
                "paired": len(paired),
                "time_vs_plain": (statistics.mean(r["seconds"] for r in paired)
                                  / statistics.mean(plain[r["seed"]]["seconds"] for r in paired) if paired else None),
                "seconds": statistics.mean(r["seconds"] for r in mine),
            })
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--labels", type=int, nargs="+", default=[10], help="labels per class of the target")
    parser.add_argument("--name", default="finetune_recipes")
    parser.add_argument("--merge", nargs="*", default=[], help="earlier results files whose runs join these")
    parser.add_argument("--no-run", action="store_true", help="tabulate the merged runs only")
    args = parser.parse_args()
    rows = []
    for name in args.merge:
        rows += json.loads((Path(__file__).parent / "results" / f"{name}.json").read_text())["runs"]
    done = {(r["variant"], r["labels"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for labels in args.labels:
            for seed in args.seeds:
                for variant in args.variants:
                    if args.no_run or (variant, labels, seed) in done:
                        continue
                    rows.append(run(variant, seed, labels, Path(tmp)))
                    print(json.dumps(rows[-1]), flush=True)
    summary = summarize(rows)
    lines = [
        "# Fine-tuning recipes on the default job",
        "",
        f"configs/default.yaml with a pinned recipe (plain: 80 fine-tuning epochs, geometric augmentation) "
        f"and one change per variant; {machine()}. Target test accuracy; "
        "\"vs plain\" is the mean difference to plain fine-tuning over the same seeds (wins: seeds "
        "where the variant is higher); time is the whole `kerastl train` process, as a ratio of plain's.",
        "",
        "| labels/class | variant | change | seeds | mean | stdev | vs plain | wins | time vs plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        vs = "" if s["vs_plain"] is None else f"{s['vs_plain'] * 100:+.1f}"
        ratio = "" if s["time_vs_plain"] is None else f"{s['time_vs_plain']:.2f}x"
        lines.append(f"| {s['labels']} | {s['variant']} | {'; '.join(s['overrides']) or '-'} | "
                     f"{','.join(map(str, s['seeds']))} | {s['mean']:.4f} | {s['stdev']:.4f} | {vs} | "
                     f"{s['wins']}/{s['paired']} | {ratio} |")
    write_results(args.name, lines, {"summary": summary, "runs": rows})


if __name__ == "__main__":
    main()
