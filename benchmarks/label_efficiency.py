"""Label efficiency: target test accuracy against labels per class, for training from scratch,
plain fine-tuning, the default job's recipe (MixUp, twice the fine-tuning steps) and
semi-supervised MME.

Each cell is a whole `kerastl train` run of the default job (or, for MME, of
configs/digits_mme.yaml) with `target.labels_per_class` set, as in
benchmarks/finetune_recipes.py, whose variants these are. Writes
benchmarks/results/label_efficiency.{md,json,png}; the figure is drawn from the JSON.

    python benchmarks/label_efficiency.py --labels 1 5 10 50 --seeds 0 1 2 3 4 \
        [--variants scratch plain default mme] [--merge NAME ...] [--no-run] [--plot-only]

`--merge` adds the runs of earlier finetune_recipes-style results files (runs already there
are not repeated); `--plot-only` redraws the table and figure from label_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import RESULTS, machine, write_results
from finetune_recipes import VARIANTS, run

NAMES = {"scratch": "from scratch", "plain": "plain fine-tuning", "default": "the default recipe",
         "mme": "MME (+ unlabelled target)"}
# Earlier variants with the very config of one of these (the default job's recipe: MixUp and
# 160 fine-tuning epochs), whose runs count as its own.
ALIASES = {"mixup_long": "default"}


def cells(rows: list) -> dict:
    """{(variant, labels): [accuracy per seed, in seed order]}."""
    out = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        out.setdefault((r["variant"], r["labels"]), []).append(r["target_test_accuracy"])
    return out


def table(rows: list, variants: list, labels: list) -> list[str]:
    acc = cells(rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "# Label efficiency",
        "",
        f"Target test accuracy (mean ± stdev over seeds; n = seeds run) on the handwritten digits "
        f"with N labels per class; {machine()}. Fine-tuning starts from the default job's "
        "syndigits-pretrained MobileNetV3Small. Plain fine-tuning: 80 epochs, geometric augmentation; "
        "the default recipe adds MixUp (0.2) and trains 160 epochs; from scratch trains the same model "
        "on the labels alone with plain fine-tuning's schedule; MME (configs/digits_mme.yaml, 9,000 "
        "steps) also reads the unlabelled target images. Seeds: "
        f"{', '.join(map(str, seeds))}.",
        "",
        "![label efficiency](label_efficiency.png)",
        "",
        "| labels/class | " + " | ".join(NAMES.get(v, v) for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for n in labels:
        row = []
        for v in variants:
            a = acc.get((v, n), [])
            sd = statistics.stdev(a) if len(a) > 1 else 0.0
            row.append(f"{statistics.mean(a):.3f} ± {sd:.3f} (n={len(a)})" if a else "-")
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return lines


def plot(rows: list, variants: list, labels: list, path: Path) -> None:
    """Mean accuracy against labels per class (log axis), one line per variant, the seeds'
    range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    acc = cells(rows)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for v in variants:
        xs = [n for n in labels if (v, n) in acc]
        if not xs:
            continue
        means = [statistics.mean(acc[v, n]) for n in xs]
        line, = ax.plot(xs, means, marker="o", label=NAMES.get(v, v))
        ax.fill_between(xs, [min(acc[v, n]) for n in xs], [max(acc[v, n]) for n in xs],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks(labels, [str(n) for n in labels])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("labelled target images per class")
    ax.set_ylabel("target test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[1, 5, 10, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["scratch", "plain", "default", "mme"],
                        choices=list(VARIANTS))
    parser.add_argument("--merge", nargs="*", default=[], help="finetune_recipes-style results files to reuse")
    parser.add_argument("--no-run", action="store_true", help="tabulate the merged runs only")
    parser.add_argument("--plot-only", action="store_true", help="redraw from label_efficiency.json")
    args = parser.parse_args()
    if args.plot_only:
        payload = json.loads((RESULTS / "label_efficiency.json").read_text())
        rows, variants, labels = payload["runs"], payload["variants"], payload["labels"]
        (RESULTS / "label_efficiency.md").write_text("\n".join(table(rows, variants, labels)) + "\n")
        plot(rows, variants, labels, RESULTS / "label_efficiency.png")
        return
    rows, seen = [], set()
    for name in args.merge:
        for r in json.loads((RESULTS / f"{name}.json").read_text())["runs"]:
            r = dict(r, variant=ALIASES.get(r["variant"], r["variant"]))
            key = (r["variant"], r["labels"], r["seed"])
            if r["variant"] in args.variants and r["labels"] in args.labels and key not in seen:
                seen.add(key)  # a run in two merged files counts once
                rows.append(r)
    done = {(r["variant"], r["labels"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for labels in args.labels:
                for variant in args.variants:
                    if (variant, labels, seed) not in done and not args.no_run:
                        rows.append(run(variant, seed, labels, Path(tmp)))
                        print(json.dumps(rows[-1]), flush=True)
                        write(rows, args)  # after every run: an interrupted benchmark keeps what it measured
    write(rows, args)


def write(rows: list, args) -> None:
    rows = [r for r in rows if r["seed"] in args.seeds]
    write_results("label_efficiency", table(rows, args.variants, args.labels),
                  {"variants": args.variants, "labels": args.labels, "runs": rows})
    plot(rows, args.variants, args.labels, RESULTS / "label_efficiency.png")


if __name__ == "__main__":
    main()
