"""The generated pages of the documentation: the configuration reference (from the config
dataclasses and the adaptation methods' declarations), the CLI reference (from click) and
the benchmarks page (from benchmarks/results/index.yaml). `gen_pages.py` writes them at
build time, so none of them can drift from the code; the tests read them too."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------
# Configuration reference


def _field_comments(cls) -> dict[str, str]:
    """The comment lines right above each field of dataclass `cls`, joined: its help."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment, i = [], node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                comment.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            found[node.target.id] = " ".join(comment)
    return found


def _type_text(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a) for a in parts)
        return text + (" or `null`" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _bounds_text(f: dataclasses.Field) -> str:
    meta = f.metadata
    if "range" in meta:
        return f"{meta['range'][0]} to {meta['range'][1]}"
    if "min" in meta:
        return f">= {meta['min']}"
    if meta.get("positive"):
        return "> 0"
    return ""


def _value_text(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{yaml.safe_dump(value, default_flow_style=True).strip()}`"
    return f"`{value}`"


def config_rows(cls=None, default=None, prefix="") -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, allowed, help) for every key of the config, sections included."""
    from kerastl.config import Config

    cls = cls or Config
    default = default if default is not None else cls()
    hints = typing.get_type_hints(cls)
    helps = _field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        section = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
        value = getattr(default, f.name)
        if section is not None:
            optional = value is None
            rows.append((key, "section" + (" or `null`" if optional else ""), "`null`" if optional else "",
                         "", helps.get(f.name) or (section.__doc__ or "").strip().splitlines()[0]))
            rows += config_rows(section, value if value is not None else section(), key + ".")
        else:
            rows.append((key, _type_text(tp), _value_text(value), _bounds_text(f), helps.get(f.name, "")))
    return rows


def method_rows() -> list[tuple[str, str, str, str, str]]:
    """(method, parameter, default, allowed, help) for every adaptation method's parameter."""
    from kerastl.adaptation.catalog import CATALOG

    rows = []
    for name in CATALOG.names():
        spec = CATALOG.get(name)
        if not spec.params:
            rows.append((name, "(none)", "", "", spec.summary))
        for pname, p in spec.params.items():
            allowed = (f"{p.low} to {p.high}" if p.low is not None and p.high is not None else
                       f">= {p.low}" if p.low is not None else "")
            rows.append((name, pname, _value_text(p.default), allowed, p.help))
    return rows


def _table(header: list[str], rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def config_reference() -> str:
    rows = [(f"`{k}`", t, d, a, h) for k, t, d, a, h in config_rows()]
    methods = [(f"`{m}`", f"`{p}`" if p != "(none)" else p, d, a, h) for m, p, d, a, h in method_rows()]
    return "\n\n".join([
        "# Configuration reference",
        "Every key a config file (or `--set key=value`) can give, generated from the config "
        "dataclasses in `kerastl/config.py`: its type, its default, the values it allows and "
        "what it does. A key not listed here is an error, and so is a key given twice. "
        "`base: other.yaml` (a path relative to the file) starts from another config and "
        "deep-merges this one over it (see [Your own images](../own-images.md#configs-that-build-on-another)).",
        _table(["key", "type", "default", "allowed", "what it does"], rows),
        "## `adapt.params`: each method's parameters",
        "Given as `adapt.params: {name: value}`; generated from each method's `declare(...)` "
        "statement (`kerastl methods` prints the same).",
        _table(["method", "parameter", "default", "allowed", "what it does"], methods),
    ]) + "\n"


# --------------------------------------------------------------------------------------
# CLI reference


def _option_row(param) -> tuple[str, str, str, str]:
    import click

    names = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
    if isinstance(param, click.Argument):
        return (f"`{param.human_readable_name}`", "argument" + ("" if param.required else ", optional")
                + (", repeatable" if param.nargs == -1 else ""), "", "")
    kind = "flag" if param.is_flag else param.type.name.lower()
    if isinstance(param.type, click.Choice):
        kind = "one of " + ", ".join(f"`{c}`" for c in param.type.choices)
    if param.multiple:
        kind += ", repeatable"
    unset = param.default in (None, ()) or type(param.default).__name__ == "Sentinel"  # click 8.2+: UNSET
    default = "" if param.is_flag or unset else f"`{param.default}`"
    return names, kind, default, (param.help or "").replace("\n", " ")


def cli_reference() -> str:
    import click

    from kerastl.cli import main

    ctx = click.Context(main, info_name="kerastl")
    parts = ["# CLI reference",
             "Generated from the `kerastl` command itself (`kerastl COMMAND --help` prints the same).",
             "```text\n" + main.get_help(ctx) + "\n```"]
    for name in main.list_commands(ctx):
        cmd = main.get_command(ctx, name)
        sub = click.Context(cmd, info_name=name, parent=ctx)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        rows = [_option_row(p) for p in cmd.params if p.name != "help"]
        parts += [f"## `kerastl {name}`", f"`kerastl {name} {usage}`",
                  inspect.cleandoc(cmd.help or "").replace("\b\n", ""),
                  _table(["argument or option", "type", "default", "what it does"], rows) if rows else ""]
    return "\n\n".join(p for p in parts if p) + "\n"


# --------------------------------------------------------------------------------------
# Benchmarks


def benchmark_entries() -> list[dict]:
    return yaml.safe_load((ROOT / "benchmarks" / "results" / "index.yaml").read_text())["tables"]


def benchmark_figures() -> list[Path]:
    """The figures drawn from the results files (listed under `data` in index.yaml): the
    benchmarks page shows them beside their tables, so they are copied to the site's root."""
    data = yaml.safe_load((ROOT / "benchmarks" / "results" / "index.yaml").read_text()).get("data", [])
    return [ROOT / "benchmarks" / "results" / name for name in data if name.endswith(".png")]


def benchmarks_page() -> str:
    parts = ["# Benchmarks",
             "The current result tables, generated from `benchmarks/results/` (listed in its "
             "`index.yaml`); each names the script that writes it and the machine it was "
             "measured on. Seeds repeat bit for bit only on the same CPU type and TensorFlow "
             "build. How the numbers came to be, and the screens that decided the recipes, "
             "are in `benchmarks/NOTES.md`."]
    for entry in benchmark_entries():
        text = (ROOT / "benchmarks" / "results" / entry["file"]).read_text()
        body = text.split("\n", 1)[1] if text.startswith("# ") else text
        # The tables' own headings sit one level below this page's.
        body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
        parts += [f"## {entry['title']}",
                  f"{entry['about']}\n\nMeasured {entry['measured']}. Reproduce: `{entry['command']}` "
                  f"(writes `benchmarks/results/{entry['file']}`).",
                  body.strip()]
    return "\n\n".join(parts) + "\n"
