"""The documentation: it builds strictly (no broken link, anchor or API reference), the
generated references cover every config key and command option, every config shown
validates, and every `kerastl ...` command shown exists with the options it is shown with."""

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import click
import yaml

from kerastl.cli import main
from kerastl.config import Config, config_from_dict
from kerastl.configfile import deep_merge, read_yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
sys.path.insert(0, str(ROOT / "docs"))
import reference_pages  # noqa: E402


def _blocks(lang):
    """(page, text) of every fenced block in `lang`, except those a page marks as not meant
    to validate with an HTML comment right before the fence."""
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(rf"(<!-- not validated[^>]*-->\n)?```{lang}\n(.*?)```", text, re.S):
            if not m.group(1):
                yield page, m.group(2)


def _keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name
        section = next((a for a in (hints[f.name], *typing.get_args(hints[f.name]))
                        if dataclasses.is_dataclass(a)), None)
        if section is not None:
            yield from _keys(section, prefix + f.name + ".")


def test_the_site_builds_strictly(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config_page = (tmp_path / "reference" / "config" / "index.html").read_text()
    assert "adapt.bn_protocol" in config_page and "train.precise_bn" in config_page
    assert "Unsupervised adaptation, rendered fonts to handwriting" in (tmp_path / "benchmarks" / "index.html").read_text()


def test_the_config_reference_lists_every_key_with_help():
    from kerastl.adaptation.catalog import CATALOG

    page = reference_pages.config_reference()
    keys = list(_keys(Config))
    assert len(keys) > 80
    for key in keys:
        assert f"| `{key}` |" in page, key
    assert all(row[4] for row in reference_pages.config_rows()), "every key has a line of help"
    for name in CATALOG.names():
        for param in CATALOG.get(name).params:
            assert f"| `{name}` | `{param}` |" in page, (name, param)


def test_the_cli_reference_lists_every_command_and_option():
    page = reference_pages.cli_reference()
    for name, cmd in main.commands.items():
        assert f"## `kerastl {name}`" in page
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert f"`{param.opts[0]}`" in page, (name, param.opts)


def test_every_config_in_the_docs_validates():
    checked = 0
    for page, text in _blocks("yaml"):
        if "apiVersion:" in text:  # Kubernetes manifests, not kerastl configs
            continue
        data = yaml.safe_load(text)
        if all("." in key for key in data):  # a sweep's search space (config keys as paths)
            from kerastl.sweep.plan import parse_space

            assert parse_space(data, f"{page.name}: yaml block {text[:40]!r}")
            continue
        if "base" in data:  # the shipped configs' bases, as a config beside them resolves them
            data = deep_merge(read_yaml(ROOT / "configs" / data.pop("base")), data)
        config_from_dict(data, f"{page.name}: yaml block {text[:40]!r}")
        checked += 1
    assert checked >= 6


def _commands():
    for page, text in _blocks("bash"):
        for line in text.replace("\\\n", " ").splitlines():
            line = line.strip()
            for part in re.split(r"&&|;", line):
                part = part.strip()
                if part.startswith("kerastl "):
                    yield page, part.split(" #")[0]
    for page in PAGES:  # inline code
        for m in re.finditer(r"`(kerastl [^`]+)`", page.read_text()):
            yield page, m.group(1)


def test_every_command_shown_exists_with_its_options():
    checked = 0
    for page, line in _commands():
        words = shlex.split(line)[1:]
        while words and words[0].startswith("--"):  # the group's own options
            assert words.pop(0) in ("--verbose", "--version", "--help"), (page.name, line)
        if not words or words[0].isupper():  # `kerastl COMMAND ...` placeholders
            continue
        cmd = main.commands.get(words[0])
        assert cmd is not None, f"{page.name}: {line!r}: no command {words[0]!r}"
        known = {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        for word in words[1:]:
            if word.startswith("-") and not re.match(r"^-?\d", word):
                assert word.split("=")[0] in known | {"-h", "--help"}, f"{page.name}: {line!r}: {word} unknown"
        checked += 1
    assert checked >= 30


def test_the_results_index_lists_exactly_the_results():
    results = ROOT / "benchmarks" / "results"
    index = yaml.safe_load((results / "index.yaml").read_text())
    tables = [e["file"] for e in index["tables"]]
    expected = set(tables) | {t.replace(".md", ".json") for t in tables} | set(index["data"]) | {"index.yaml"}
    assert {p.name for p in results.iterdir()} == expected
    for entry in index["tables"]:
        script = entry["command"].split()[1]
        assert (ROOT / script).is_file(), entry
