"""A sweep's results as a terminal table and one HTML page (SWEEP/report.html): the trials
with their criteria and, where known, target test accuracy; the pick; each criterion's
regret; the ensemble and the distilled model; the top trials' curves."""

from __future__ import annotations

import html
import json
from pathlib import Path

from kerastl import runs
from kerastl.sweep.scoring import CRITERIA

REPORT = "report.html"


def _f(v, digits=3) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else (f"{v:.{digits}f}" if isinstance(v, float)
                                                                       else str(v))


def _values(row: dict) -> str:
    return " ".join(f"{k.split('.')[-1].split('@')[0]}={_f(v, 4)}" for k, v in row["values"].items())


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    labelled = "best_oracle" in results
    header = ["trial", "config", "seed", "values", *CRITERIA, *(["target test"] if labelled else []), ""]
    out = []
    for i, r in enumerate(results["trials"]):
        s = r["scores"]
        mark = ("pick" if i == results["pick"]["index"] else "") + (
            " ens" if r["trial"] in results["ensemble"]["members"] else "")
        out.append([r["trial"], r["config"], str(r["seed"]), _values(r) or "-",
                    *(_f(s.get(c)) for c in CRITERIA), *([_f(s.get("oracle"), 4)] if labelled else []), mark.strip()])
    return header, out


def summary_lines(results: dict) -> list[str]:
    lines = [f"  pick     {results['pick']['trial']} by {results['criterion']}"
             + (f": target test {results['pick']['target_test_accuracy']:.4f} (best trial "
                f"{results['best_oracle']:.4f})" if "best_oracle" in results else "")]
    ens = results["ensemble"]
    lines.append(f"  ensemble {len(ens['members'])} trial(s) ({', '.join(ens['members'])})"
                 + (f": target test {ens['target_test_accuracy']:.4f}" if "target_test_accuracy" in ens else ""))
    m = results["model"]
    lines.append(f"  model    {Path(results['sweep']) / 'model'}: distilled in {m['steps']} steps, "
                 f"agrees with the ensemble on {m['agreement_with_ensemble']:.1%} of the test images"
                 + (f", target test {m['target_test_accuracy']:.4f}" if "target_test_accuracy" in m else ""))
    lines.append(f"           {m['size_bytes'] / 1e6:.2f} MB, {m['latency_ms']:.2f} ms/image (the ensemble: "
                 f"{m['ensemble_size_bytes'] / 1e6:.2f} MB, ~{m['ensemble_latency_ms']:.2f} ms)")
    if results.get("regret"):
        lines.append("  regret   " + ", ".join(f"{k} {v['regret']:.3f}" for k, v in results["regret"].items())
                     + "  (best trial's target test accuracy minus the criterion's pick's)")
    if results.get("failed"):
        lines.append(f"  failed   {', '.join(str(f['trial']) for f in results['failed'])} (see logs/)")
    return lines


def format_table(results: dict) -> str:
    header, rows = table_rows(results)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    text = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(["", f"kerastl sweep {results['sweep']}", *text, *summary_lines(results)])


def _curves(sweep_dir: Path, results: dict, n: int = 4) -> list[str]:
    """The top trials' per-epoch curves (by the sweep's criterion): one image per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerastl.evaluation.plots import png_uri
    from kerastl.evaluation.report import read_history
    from kerastl.sweep.scoring import top

    rows = results["trials"]
    chosen = [rows[i] for i in top([r["scores"] for r in rows], results["criterion"], n)]
    figures = []
    for column in ("target_test_accuracy", "validator_im", "val_accuracy", "adapt_loss"):
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
        drawn = False
        for r in chosen:
            hist = [h for h in read_history(Path(sweep_dir) / r["run_dir"]) if h.get("stage") == "adapt" and column in h]
            if hist:
                ax.plot([h["epoch"] for h in hist], [h[column] for h in hist], marker=".", label=r["trial"])
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.legend(fontsize=7)
        figures.append(f'<img src="{png_uri(fig)}" alt="{html.escape(column)}">')
    return figures


def build_html(sweep_dir: Path, results: dict) -> str:
    from kerastl.evaluation.report import CSS

    header, rows = table_rows(results)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    regret = ""
    if results.get("regret"):
        regret = ("<table><thead><tr><th>criterion</th><th>its pick</th><th>target test</th><th>regret</th></tr>"
                  "</thead><tbody>" + "".join(
                      f"<tr><td>{html.escape(k)}</td><td>{html.escape(results['trials'][v['trial']]['trial'])}</td>"
                      f"<td>{v['oracle']:.4f}</td><td>{v['regret']:.4f}</td></tr>"
                      for k, v in results["regret"].items()) + "</tbody></table>")
    summary = "<pre>" + html.escape("\n".join(summary_lines(results))) + "</pre>"
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>kerastl sweep</title><style>{CSS}</style>"
            f"</head><body><h1>kerastl sweep {html.escape(results['sweep'])}</h1>"
            f"<section id=\"summary\">{summary}</section>"
            f"<section id=\"trials\"><h2>Trials</h2><p class=\"note\">Criteria are label-free (higher is better), "
            f"computed on the same held-back target images for every trial; target test accuracy, where the "
            f"target has labels, never chooses anything.</p><table><thead><tr>{head}</tr></thead><tbody>{body}"
            f"</tbody></table></section>"
            + (f"<section id=\"regret\"><h2>Regret per criterion</h2>{regret}</section>" if regret else "")
            + f"<section id=\"curves\"><h2>Top trials' curves</h2>{''.join(_curves(sweep_dir, results))}</section>"
            f"</body></html>")


def write_report(sweep_dir: Path, results: dict | None = None) -> Path:
    from kerastl.sweep.study import RESULTS

    if results is None:
        results = json.loads((Path(sweep_dir) / RESULTS).read_text())
    path = Path(sweep_dir) / REPORT
    runs.atomic_write(path, build_html(sweep_dir, results))
    return path
