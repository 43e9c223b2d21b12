"""Does `kerastl rank` order starting points as fine-tuning them does?

Makes candidate starting points for the default job's target (10 labels per class of the
handwritten digits): backbones pretrained on a source for different budgets, on a different
source, of a different family, and one untrained. None is pretrained on digits-m: it is
made from the same handwritten images, the target's test images among them. Then (1) `kerastl rank` scores them all
on the target's labelled images, (2) each is fine-tuned with the default job's fine-tuning
recipe (seeds given), and the table puts each score's ranking beside the fine-tuned
accuracy's, with Kendall's tau between them. Writes benchmarks/results/rank_candidates.{json,md}.

    python benchmarks/rank_candidates.py [--seeds 0 1]
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

SMALL = ["model.backbone=MobileNetV3Small", "model.backbone_args={alpha: 0.75, minimalistic: true}"]
V2 = ["model.backbone=MobileNetV2", "model.backbone_args={alpha: 0.35}"]
PRETRAIN = ["source=null", "target.labels_per_class=null", "target.val_fraction=0.1", "target.test_fraction=0.1",
            "train.finetune.head_epochs=0", "train.finetune.lr=0.004", "train.finetune.backbone_lr_mult=1.0",
            "train.finetune.warmup_epochs=0.5", "target.augment={rotate: 0.03, zoom: 0.1, translate: 0.08}"]

# name -> (backbone overrides, pretraining overrides or None for an untrained backbone)
CANDIDATES = {
    "syndigits-10ep": (SMALL, PRETRAIN + ["target.dataset=syndigits", "train.finetune.epochs=10"]),
    "syndigits-3ep": (SMALL, PRETRAIN + ["target.dataset=syndigits", "train.finetune.epochs=3"]),
    "syndigits-1ep": (SMALL, PRETRAIN + ["target.dataset=syndigits", "train.finetune.epochs=1"]),
    "lowres-10ep": (SMALL, PRETRAIN + ["target.dataset=syndigits-lowres", "train.finetune.epochs=10"]),
    "syndigits-30ep": (SMALL, PRETRAIN + ["target.dataset=syndigits", "train.finetune.epochs=30"]),
    "v2-syndigits-10ep": (V2, PRETRAIN + ["target.dataset=syndigits", "train.finetune.epochs=10"]),
    "untrained": (SMALL, None),
}


def kerastl(args: list, out: Path | None = None) -> float:
    start = time.time()
    subprocess.run([sys.executable, "-m", "kerastl", *args], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return time.time() - start


def sets(overrides: list) -> list:
    return [a for o in overrides for a in ("--set", o)]


def kendall_tau(a: list, b: list) -> float:
    """Kendall's tau-b of two rankings' values."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds per candidate")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        starts = {}
        for name, (backbone, pretrain) in CANDIDATES.items():
            if pretrain is None:
                starts[name] = "MobileNetV3Small:none"
                continue
            out = tmp / f"pre-{name}"
            seconds = kerastl(["train", "--quiet", "--out", str(out), *sets(PINNED_FINETUNE + backbone + pretrain),
                               "--set", "train.report=false", "--set", f"name={name}"])
            starts[name] = str(out)
            print(f"pretrained {name} in {seconds:.0f} s", flush=True)
        ranking = tmp / "rank.json"
        proc = subprocess.run([sys.executable, "-m", "kerastl", "rank", *sum((["-c", s] for s in starts.values()), []),
                               "--set", "model.input_size=32", "--json"],
                              check=True, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        ranked = {r["candidate"]: r for r in json.loads(proc.stdout)}
        ranking.write_text(proc.stdout)
        for name, (backbone, pretrain) in CANDIDATES.items():
            weights = "none" if pretrain is None else starts[name]
            accs = []
            for seed in args.seeds:
                out = tmp / f"ft-{name}-{seed}"
                kerastl(["train", "--quiet", "--out", str(out), *sets(PINNED_FINETUNE + backbone), "--set", "source=null",
                         "--set", f"model.weights={weights}", "--set", f"seed={seed}", "--set", "train.report=false"])
                accs.append(json.loads((out / "metrics.json").read_text())["target_test"]["accuracy"])
            r = ranked[starts[name]]
            rows[name] = {"scores": r["scores"], "rank_seconds": r["seconds"], "finetuned": accs,
                          "finetuned_mean": statistics.mean(accs)}
            print(name, json.dumps(rows[name]), flush=True)
    names = list(rows)
    accuracy = [rows[n]["finetuned_mean"] for n in names]
    taus = {score: kendall_tau([rows[n]["scores"][score] for n in names], accuracy) for score in ("logme", "h_score")}
    with_leep = [n for n in names if "leep" in rows[n]["scores"]]
    taus["leep (runs only)"] = kendall_tau([rows[n]["scores"]["leep"] for n in with_leep],
                                           [rows[n]["finetuned_mean"] for n in with_leep])
    lines = [
        "# Ranking starting points without fine-tuning them",
        "",
        f"Target: configs/default.yaml's (10 labels per class of the handwritten digits); {machine()}. "
        f"Each candidate's scores from `kerastl rank` on those 100 images; fine-tuned: the default job's "
        f"fine-tuning recipe from the candidate, seeds {args.seeds}, target test accuracy. Kendall's tau "
        "between each score and the fine-tuned mean over the candidates:",
        "",
        "| score | Kendall's tau |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in taus.items()],
        "",
        "| candidate | LogME | H-score | LEEP | seconds | fine-tuned (per seed) | fine-tuned mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sorted(names, key=lambda n: -rows[n]["finetuned_mean"]):
        s = rows[n]["scores"]
        lines.append(f"| {n} | {s['logme']:.4f} | {s['h_score']:.3f} | {s['leep']:.3f} | "
                     if "leep" in s else f"| {n} | {s['logme']:.4f} | {s['h_score']:.3f} | - | ")
        lines[-1] += (f"{rows[n]['rank_seconds']:.1f} | {', '.join(f'{a:.4f}' for a in rows[n]['finetuned'])} | "
                      f"{rows[n]['finetuned_mean']:.4f} |")
    write_results("rank_candidates", lines, {"candidates": {n: CANDIDATES[n] for n in names}, "rows": rows,
                                             "kendall_tau": taus, "seeds": args.seeds})


if __name__ == "__main__":
    main()
