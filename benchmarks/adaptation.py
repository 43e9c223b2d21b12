"""Unsupervised domain adaptation on the digit tasks: every method, several seeds.

Runs configs/digits_<method>.yaml (source_only, every adaptation method and the
target_oracle upper bound) for each seed on a task, syndigits -> digits as the configs are
written or digits -> syndigits (the domains swapped), and writes, to
benchmarks/results/<name>.{md,json}, the mean and spread of target test accuracy and the
share of the source-only -> oracle gap each method closes: (method - source_only) /
(oracle - source_only).

    python benchmarks/adaptation.py [--task digits->syndigits] [--seeds 0 1 2] [--methods dann ...] [--set k=v ...] [--jobs 2]
    python benchmarks/adaptation.py --merge adaptation_3seeds adaptation_rest --name adaptation_all
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from kerastl.adaptation.catalog import CATALOG  # noqa: E402

# Every registered method, the two references first and last.
METHODS = ["source_only", *(m for m in CATALOG.names() if m not in ("source_only", "target_oracle")), "target_oracle"]


# Each task: the overrides that make it from the syndigits -> digits configs.
TASKS = {
    "syndigits->digits": [],
    "digits->syndigits": [  # real handwritten scans (labelled) -> rendered fonts (unlabelled)
        "source={dataset: digits, val_fraction: 0.1, test_fraction: 0.1, "
        "augment: {rotate: 0.03, zoom: 0.1, translate: 0.08, contrast: 0.7, brightness: 0.3}}",
        "target={dataset: syndigits, num_examples: 6000, val_fraction: 0.1, test_fraction: 0.3}",
    ],
    "digits->digits-m": [  # grey handwriting (labelled) -> the same in colour texture (unlabelled)
        "source={dataset: digits, val_fraction: 0.1, test_fraction: 0.1, "
        "augment: {rotate: 0.03, zoom: 0.1, translate: 0.08, contrast: 0.7, brightness: 0.3}}",
        "target={dataset: digits-m, val_fraction: 0.1, test_fraction: 0.3}",
    ],
    # partial: the target holds five of the source's ten classes
    "syndigits->digits-partial": ['target.classes=["0", "1", "2", "3", "4"]'],
    "syndigits->syndigits-lowres": [  # rendered digits -> low resolution, low contrast, noisy
        "target={dataset: syndigits-lowres, num_examples: 6000, val_fraction: 0.1, test_fraction: 0.3}",
    ],
}


# A method name may end in an add-on, a variant of the method's config measured as its own
# row: "+ls", label smoothing 0.1 (as SHOT's source model); "+aug" and "+data", a source model that should generalise better:
# stronger general source augmentation (DomainBed-like geometric jitter and contrast), four
# times the rendered source images; "+estimated", PADA's class weights estimated from the
# target's predictions even when the run knows the target's classes.
ADD_ONS = {"+ls": ["adapt.label_smoothing=0.1"], "+estimated": ["adapt.params.known_classes=false"],
           "+aug": ["source.augment={rotate: 0.08, zoom: 0.2, translate: 0.12, contrast: 0.4}"],
           "+data": ["source.num_examples=24000"]}


def split_add_on(method: str) -> tuple[str, list[str]]:
    """(the configs' method, the overrides of its add-on): "cdan+e+ls" -> ("cdan+e", [...])."""
    for suffix, overrides in ADD_ONS.items():
        if method.endswith(suffix) and method[:-len(suffix)] in CATALOG:
            return method[:-len(suffix)], overrides
    return method, []


def config_path(method: str) -> Path:
    return ROOT / "configs" / f"digits_{split_add_on(method)[0].replace('+e', '_e')}.yaml"


def ordered(names) -> list[str]:
    """Table order: source_only, each method followed by its add-on variants, target_oracle."""
    names = set(names)
    out = []
    for m in METHODS:
        out += [v for v in [m, *(m + suffix for suffix in ADD_ONS)] if v in names]
    return out


def run(method: str, seed: int, workdir: Path, overrides: list[str]) -> dict:
    out = workdir / f"{method}-{seed}"
    cmd = [sys.executable, "-m", "kerastl", "train", str(config_path(method)), "--quiet",
           "--out", str(out), "--set", f"seed={seed}"]
    for o in split_add_on(method)[1] + overrides:
        cmd += ["--set", o]
    start = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    seconds = round(time.time() - start, 1)
    if proc.returncode != 0:
        return {"method": method, "seed": seed, "seconds": seconds, "error": proc.stdout[-2000:]}
    return row(method, seed, out, seconds, commit())


def row(method: str, seed: int, out: Path, seconds: float, trained_at: str) -> dict:
    """The table row of a finished run directory."""
    metrics = json.loads((out / "metrics.json").read_text())
    return {"method": method, "seed": seed, "seconds": seconds, "commit": trained_at,
            "target_test_accuracy": metrics["target_test"]["accuracy"],
            "source_val_accuracy": metrics["source_val"]["accuracy"],
            "selected_epoch": metrics["adaptation"]["selection"]["epoch"],
            "selection": metrics["adaptation"]["selection"]["criterion"],
            "proxy_a_distance": metrics["adaptation"]["proxy_a_distance_after"],
            # each label-free validator's chosen epoch and its target test accuracy (+ oracle)
            "validators": metrics["adaptation"].get("validators")}


def reselect(rows: list[dict], criterion: str, replaced: str = "source_val") -> list[dict]:
    """Rows of runs that kept their epoch by `replaced`, as if they had kept it by
    `criterion`: the epoch that validator chose and that epoch's target test accuracy, both
    recorded by every run (training does not depend on the selection, only which epoch is
    kept). Not for AdaBN (`adabn` re-estimates BN statistics after choosing, and the per-epoch
    accuracy is from before), nor runs that used another selection; those stay as they were."""
    out = []
    for r in rows:
        v = (r.get("validators") or {}).get(criterion)
        # (rows from before the field: every config kept by source_val but the oracle's, `last`)
        kept_by = r.get("selection", "last" if r["method"] == "target_oracle" else replaced)
        if kept_by == replaced and r["method"] != "adabn" and v and "error" not in r:
            r = dict(r, target_test_accuracy=v["target_test_accuracy"], selected_epoch=v["epoch"],
                     selection=f"{criterion} (recorded; trained with {replaced})", source_val_accuracy=None)
        out.append(r)
    return out


def summarise(rows: list[dict], methods: list[str]) -> dict:
    out = {}
    for m in methods:
        done = sorted((r for r in rows if r["method"] == m and "error" not in r), key=lambda r: r["seed"])
        if done:
            accs = [r["target_test_accuracy"] for r in done]  # in seed order, as the table says
            vals = [r["source_val_accuracy"] for r in done if r.get("source_val_accuracy") is not None]
            out[m] = {"mean": statistics.mean(accs), "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                      "runs": accs, "seeds": [r["seed"] for r in done], "seconds": statistics.mean(r["seconds"] for r in done),
                      # (of the kept epoch; unknown for rows re-selected from their records)
                      "source_val": statistics.mean(vals) if len(vals) == len(done) else None}
    if "source_only" in out and "target_oracle" in out:
        lo, hi = out["source_only"]["mean"], out["target_oracle"]["mean"]
        for m, s in out.items():
            s["gap_closed"] = (s["mean"] - lo) / (hi - lo) if hi > lo else None
    return out


def validator_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Label-free selection: the mean target test accuracy of the epoch each validator
    chooses, per method, against the oracle's choice (the epoch with the best target
    accuracy); the last row is each validator's mean shortfall from the oracle."""
    from kerastl.evaluation.validators import VALIDATORS

    done = [r for r in rows if r.get("validators")]
    if not done:
        return []
    names = [*VALIDATORS, "oracle"]
    lines = ["", "Label-free selection: target test accuracy of the epoch each validator chooses "
             "(mean over seeds; `oracle` chooses by target test accuracy itself, which no real run can)", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    gaps = {n: [] for n in names}
    for m in methods:
        mine = [r["validators"] for r in done if r["method"] == m]
        if not mine:
            continue
        cells = []
        for n in names:
            accs = [v[n]["target_test_accuracy"] for v in mine if n in v]
            cells.append(f"{statistics.mean(accs):.3f}" if accs else "-")
            if accs and m != "target_oracle":
                gaps[n] += [v["oracle"]["target_test_accuracy"] - v[n]["target_test_accuracy"] for v in mine if n in v]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("| below the oracle (mean over all runs but target_oracle) | "
                 + " | ".join(f"{statistics.mean(g):.3f}" if g else "-" for g in gaps.values()) + " |")
    return lines


def commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def write(rows, summary, seeds, overrides, name="adaptation", task="syndigits->digits", jobs=1, notes=()):
    """Writes RESULTS/name.json and .md. `overrides` are the config overrides every run was
    trained with (the recipe: tables of one task compare only when they match); `notes` say how
    the table was made (merged from which files, reselected epochs), never a recipe."""
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    # the commit(s) the runs were trained at (a merged table may join several)
    commits = ", ".join(dict.fromkeys(r.get("commit", commit()) for r in rows)) or commit()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"machine": machine, "commit": commits, "task": task, "seeds": seeds, "overrides": overrides,
         "notes": list(notes), "jobs": jobs, "rows": rows, "summary": summary},
        indent=2) + "\n")
    source, target = task.split("->")
    labels = [o.split("=", 1)[1] for o in map(str, overrides) if o.startswith("target.labels_per_class=")]
    kind, unlabelled = ("Semi-supervised", f"{labels[-1]} labels per class + the unlabelled rest") if labels else (
        "Unsupervised", "unlabelled")
    lines = [f"# {kind} domain adaptation: {source} (labelled) -> {target} ({unlabelled})", "",
             f"configs/digits_<method>.yaml, seeds {seeds}"
             + (f", overrides {overrides}" if overrides else "") + "".join(f"; {n}" for n in notes)
             + f"; {machine}; trained at commit {commits}"
             + (f"; {jobs} runs at a time (seconds are those of runs sharing the cores)" if jobs > 1 else "")
             + ".", "",
             "| method | target test accuracy (mean ± stdev) | per seed | gap closed | source val | seconds per run |",
             "|---|---|---|---|---|---|"]
    for m, s in summary.items():
        gap = s.get("gap_closed")
        gap_text = "-" if gap is None or m in ("source_only", "target_oracle") else f"{100 * gap:.1f}%"
        lines.append(f"| {m} | {s['mean']:.3f} ± {s['stdev']:.3f} | "
                     + ", ".join(f"{a:.3f}" for a in s["runs"]) + f" | {gap_text} | "
                     + ("-" if s["source_val"] is None else f"{s['source_val']:.3f}") + " "
                     f"| {s['seconds']:.0f} |")
    lines += validator_table(rows, list(summary))
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "Failed runs: " + ", ".join(f"{r['method']} seed {r['seed']}" for r in failed)]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="syndigits->digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS,
                        help="methods to train (default: every one); a name ending in +ls, +aug, +data or +estimated is the "
                             "method's config with that variant (see ADD_ONS)")
    parser.add_argument("--runs", nargs="+", metavar="METHOD:SEED:DIR",
                        help="train nothing: tabulate finished run directories (e.g. runs made by hand with "
                             "kerastl train --out DIR); seconds from the run's config.yaml to its metrics.json")
    parser.add_argument("--commit", default=None, help="with --runs: the commit the runs were trained at")
    parser.add_argument("--name", default="adaptation",
                        help="results file name in benchmarks/results/ (without extension)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override applied to every run, e.g. adapt.epochs=5")
    parser.add_argument("--merge", nargs="+", metavar="NAME",
                        help="train nothing: join the rows of earlier results files into one table")
    parser.add_argument("--selection", metavar="VALIDATOR",
                        help="with --merge: tabulate runs that kept their epoch by source validation accuracy "
                             "as if kept by VALIDATOR (each run records every validator's choice); not AdaBN")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time; on the 2-core machine two 1,500-step runs side by side took 149 "
                             "and 183 s, one alone 115-137 s: ~1.5x the runs per hour")
    args = parser.parse_args()
    if args.merge:
        rows, seeds, recipes = [], set(), {}
        for name in args.merge:
            data = json.loads((RESULTS / f"{name}.json").read_text())
            if data.get("task", "syndigits->digits") != args.task:
                sys.exit(f"--merge: {name} is task {data.get('task', 'syndigits->digits')}, not --task {args.task}")
            recipes[name] = data.get("overrides", [])
            rows += [{"commit": data.get("commit", "unknown"), **r} for r in data["rows"]]
            seeds |= set(data["seeds"])
        if len({json.dumps(r) for r in recipes.values()}) > 1:
            sys.exit("--merge: the files were trained with different overrides, so their rows do not compare: "
                     + "; ".join(f"{n}: {r or 'none'}" for n, r in recipes.items()))
        notes = [f"merged from {args.merge}"]
        if args.selection:
            rows = reselect(rows, args.selection)
            notes.append(f"runs trained with selection source_val tabulated at the epoch {args.selection} chose "
                         "(recorded by each run; source val then '-')")
        methods = ordered(r["method"] for r in rows)
        print(write(rows, summarise(rows, methods), sorted(seeds), next(iter(recipes.values())), args.name,
                    args.task, notes=notes))
        return
    if args.runs:
        rows = []
        for spec in args.runs:
            method, seed, path = spec.split(":", 2)
            out = Path(path)
            seconds = round((out / "metrics.json").stat().st_mtime - (out / "config.yaml").stat().st_mtime, 1)
            rows.append(row(method, int(seed), out, seconds, args.commit or commit()))
        seeds = sorted({r["seed"] for r in rows})
        print(write(rows, summarise(rows, ordered(r["method"] for r in rows)), seeds, args.overrides, args.name,
                    args.task))
        return
    rows = []
    overrides = TASKS[args.task] + args.overrides
    todo = [(method, seed) for seed in args.seeds for method in args.methods]
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, method, seed, Path(tmp), overrides) for method, seed in todo]
        for future in concurrent.futures.as_completed(futures):
            rows.append(future.result())
            print(json.dumps(rows[-1])[:300], flush=True)
            # Written after every run, so an interrupted benchmark keeps what it measured.
            write(rows, summarise(rows, args.methods), args.seeds, args.overrides, args.name, args.task, args.jobs)
    rows.sort(key=lambda r: (r["seed"], args.methods.index(r["method"])))
    print(write(rows, summarise(rows, args.methods), args.seeds, args.overrides, args.name, args.task, args.jobs))

if __name__ == "__main__":
    main()
