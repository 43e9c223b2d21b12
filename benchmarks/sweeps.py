"""What a sweep gives on each shift task: its model against the single methods it ran, and
whether its label-free choice finds the best trials.

    python benchmarks/sweeps.py run --task syndigits->digits --seed 0 --out /tmp/sweeps/s0 \
        [--configs mdd cdan] [--trials 8] [--parallel 2] [--set key=value ...]
    python benchmarks/sweeps.py collect /tmp/sweeps/s0 /tmp/sweeps/s1 ... --name sweeps \
        [--references adaptation_9000_7seeds ...]

`run` is `kerastl sweep` on the task's configs (benchmarks/adaptation.py's TASKS) with the
sweep's seed; `collect` reads finished sweep folders and writes
benchmarks/results/<name>.{md,json}: per sweep, the best single method's mean over its
trials, the best trial, each criterion's pick and regret, the top-k ensembles and the
shipped (distilled) model, with target test accuracy throughout; and the criteria's
regret averaged over the sweeps. The ensembles of k = 1..8 trials are recomputed from
the predictions each trial keeps (sweep_outputs.npz), so the choice of --ensemble is
measured, not guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from adaptation import TASKS  # noqa: E402
from common import machine, write_results  # noqa: E402

from kerastl.sweep.scoring import CRITERIA, top  # noqa: E402


def run(args):
    configs = [str(ROOT / "configs" / f"digits_{c.replace('+e', '_e')}.yaml") for c in args.configs]
    cmd = [sys.executable, "-m", "kerastl", "sweep", *configs, "--out", args.out, "--trials", str(args.trials),
           "--parallel", str(args.parallel), "--set", f"seed={args.seed}"]
    for o in TASKS[args.task] + args.overrides:
        cmd += ["--set", o]
    started = time.time()
    proc = subprocess.run(cmd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    meta = {"task": args.task, "seed": args.seed, "configs": args.configs, "overrides": args.overrides,
            "parallel": args.parallel,
            "command_seconds": round(time.time() - started, 1), "returncode": proc.returncode}
    (Path(args.out) / "benchmark.json").write_text(json.dumps(meta, indent=2) + "\n")
    sys.exit(proc.returncode)


def ensembles(folder: Path, results: dict) -> dict:
    """Target test accuracy of the top-k trials' averaged predictions, k = 1..n, for each
    criterion's ranking (and for the oracle's, the best one could do)."""
    rows = results["trials"]
    outs = [np.load(folder / r["run_dir"] / "sweep_outputs.npz") for r in rows]
    if "test_labels" not in outs[0]:
        return {}
    labels = outs[0]["test_labels"]
    scores = [r["scores"] for r in rows]
    out = {}
    for name in (*CRITERIA, "oracle"):
        ranked = top(scores, name, len(rows))
        out[name] = [float(np.mean(np.argmax(np.mean([outs[i]["test_probs"] for i in ranked[:k]], axis=0), 1)
                                   == labels)) for k in range(1, len(ranked) + 1)]
    return out


def references(names: list[str]) -> list[dict]:
    """(task, overrides, source-only mean, oracle mean, file) of adaptation results files
    (benchmarks/adaptation.py) holding both references."""
    out = []
    for name in names:
        data = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        summary = data["summary"]
        if "source_only" in summary and "target_oracle" in summary:
            out.append({"task": data["task"], "overrides": data["overrides"],
                        "source_only": summary["source_only"]["mean"], "oracle": summary["target_oracle"]["mean"],
                        "file": f"{name}.md"})
    return out


def task_label(sweep: dict) -> str:
    """The task's name, marked (*) when the sweep changed the configs' recipe (explained under the table)."""
    return sweep["task"] + (" (*)" if sweep["overrides"] else "")


def collect(args):
    refs = references(args.references)
    sweeps = []
    if args.previous:  # sweeps whose folders are gone, as an earlier collect recorded them
        given = {Path(p).name for p in args.folders}
        old = json.loads((ROOT / "benchmarks" / "results" / f"{args.previous}.json").read_text())
        sweeps += [s for s in old["sweeps"] if s["folder"] not in given]
    for path in args.folders:
        folder = Path(path)
        results = json.loads((folder / "results.json").read_text())
        meta_path = folder / "benchmark.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        rows = results["trials"]
        by_config: dict[str, list[float]] = {}
        for r in rows:
            by_config.setdefault(r["config"], []).append(r["scores"]["oracle"])
        best_config = max(by_config, key=lambda c: statistics.mean(by_config[c]))
        sweeps.append({
            "folder": folder.name, "task": meta.get("task", "syndigits->digits"), "seed": meta.get("seed"),
            "overrides": meta.get("overrides", []),
            "parallel": meta.get("parallel"), "trials": len(rows), "criterion": results["criterion"],
            "per_config": {c: {"mean": statistics.mean(v), "n": len(v), "values": v} for c, v in by_config.items()},
            "best_single_method": {"config": best_config, "mean": statistics.mean(by_config[best_config])},
            "best_trial": results.get("best_oracle"),
            "pick": results["pick"], "regret": results.get("regret", {}),
            "ensemble": results["ensemble"], "model": results["model"],
            "ensembles_by_k": ensembles(folder, results),
            "timing": results.get("timing", {}), "command_seconds": meta.get("command_seconds"),
        })
    for s in sweeps:  # the references measured with the same recipe (the sweep's overrides) on its task
        mine = [r for r in refs if r["task"] == s["task"] and r["overrides"] == s["overrides"]]
        s["references"] = mine[0] if mine else s.get("references")
    if not sweeps:
        sys.exit("collect: no sweeps: give sweep folders, or --previous NAME")
    lines = ["| task | sweep seed | trials | best single method (its trials' mean) | best trial | pick "
             f"({sweeps[0]['criterion']}) | ensemble | **shipped model** | distilled for | model - best method | "
             "model - best trial | trials' wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sweeps:
        m = s["model"].get("target_test_accuracy")
        lines.append(
            f"| {task_label(s)} | {s['seed']} | {s['trials']} | "
            f"{s['best_single_method']['config']} "
            f"{s['best_single_method']['mean']:.3f} | {s['best_trial']:.3f} | "
            f"{s['pick']['target_test_accuracy']:.3f} | {s['ensemble']['target_test_accuracy']:.3f} "
            f"(top {len(s['ensemble']['members'])}) | **{m:.3f}** | {s['model']['steps']:,} steps | "
            f"{100 * (m - s['best_single_method']['mean']):+.1f} "
            f"points | {100 * (m - s['best_trial']):+.1f} points | {s['timing'].get('trials_wall_seconds', 0) / 60:.0f} min |")
    recipes = {}  # one footnote per changed recipe, naming its sweeps
    for s in sweeps:
        if s["overrides"]:
            recipes.setdefault(tuple(s["overrides"]), []).append(f"{s['task']} seed {s['seed']}")
    for overrides, named in recipes.items():
        lines += ["", f"(*) {'; '.join(named)}: every trial with " + ", ".join(f"`{o}`" for o in overrides) + "."]
    with_refs = [s for s in sweeps if s["references"]]
    if with_refs:
        lines += ["", "The share of the source-only -> target-oracle gap the shipped model closes, with those two "
                  "references trained with the sweep's recipe on its task:", "",
                  "| task | sweep seed | source-only | target oracle | shipped model | gap closed | references from |",
                  "|---|---|---|---|---|---|---|"]
        for s in with_refs:
            r, m = s["references"], s["model"].get("target_test_accuracy")
            lines.append(f"| {task_label(s)} | {s['seed']} | {r['source_only']:.3f} | "
                         f"{r['oracle']:.3f} | {m:.3f} | {100 * (m - r['source_only']) / (r['oracle'] - r['source_only']):.0f}% "
                         f"| {r['file']} |")
    lines += ["", "Regret of each criterion's pick (best trial's target test accuracy minus the pick's), "
              "in points, per sweep and on average:", "",
              "| criterion | " + " | ".join(f"{s['task']} seed {s['seed']}" for s in sweeps) + " | mean |",
              "|---|" + "---|" * (len(sweeps) + 1)]
    for name in CRITERIA:
        vals = [100 * s["regret"][name]["regret"] for s in sweeps if name in s["regret"]]
        if vals:
            lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {statistics.mean(vals):.1f} |")
    lines += ["", "Target test accuracy of the top-k trials' averaged predictions, by the ranking of "
              "each criterion (oracle: ranked by target test accuracy itself), mean over the sweeps:", ""]
    ks = min(len(s["ensembles_by_k"].get("oracle", [])) for s in sweeps)
    if ks:
        lines += ["| ranking | " + " | ".join(f"k={k}" for k in range(1, ks + 1)) + " |",
                  "|---|" + "---|" * ks]
        for name in (*CRITERIA, "oracle"):
            means = [statistics.mean(s["ensembles_by_k"][name][k] for s in sweeps) for k in range(ks)]
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    head = ["# Sweeps: the shipped model against the single methods, and the label-free choice", "",
            f"Machine: {machine()}. Generated by `python benchmarks/sweeps.py collect` from sweeps made with "
            "`python benchmarks/sweeps.py run` (each sweep: `kerastl sweep` of the task's configs, 8 trials of "
            "9,000 steps, two trials at a time). Target test accuracy throughout; target labels chose nothing."
            + (f" {args.note}" if args.note else ""), ""]
    print("\n".join(head + lines))
    write_results(args.name, head + lines, {"sweeps": sweeps})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--task", choices=sorted(TASKS), default="syndigits->digits")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--configs", nargs="+", default=["mdd", "cdan"])
    r.add_argument("--trials", type=int, default=8)
    r.add_argument("--parallel", type=int, default=2)
    r.add_argument("--out", required=True)
    r.add_argument("--set", dest="overrides", action="append", default=[],
                   help="config override for every trial, after the task's own, e.g. source.augment={...}")
    c = sub.add_parser("collect")
    c.add_argument("folders", nargs="*")
    c.add_argument("--name", default="sweeps")
    c.add_argument("--previous", metavar="NAME",
                   help="also the sweeps of an earlier collect's results file (benchmarks/results/NAME.json) "
                        "whose folders are not given, e.g. because they were deleted")
    c.add_argument("--note", help="a sentence for the table's header: how these sweeps were run")
    c.add_argument("--references", nargs="*", default=[], metavar="NAME",
                   help="results files of benchmarks/adaptation.py (names in benchmarks/results/) with source_only "
                        "and target_oracle rows: the gap each sweep's model closes, where task and recipe match")
    args = parser.parse_args()
    run(args) if args.cmd == "run" else collect(args)


if __name__ == "__main__":
    main()
