"""Config files as data: YAML reading, `base:` inheritance and `--set` overrides.

What comes out is a plain dict; `kerastl.config` turns it into a validated `Config`.

- A key written twice in one mapping is an error naming both lines (YAML's safe loader would
  keep the last one silently, losing the first block).
- `base: other.yaml` (a path relative to the file that names it) starts from that file's
  data and deep-merges this file over it: mappings merge key by key, anything else (a
  value, a list, `null`) replaces. Bases may have bases; a cycle is an error.
- `--set dotted.key=value` overrides, the value read as YAML, apply after inheritance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kerastl.errors import ConfigError

BASE_KEY = "base"


class _DuplicateKey(Exception):
    def __init__(self, key, first_line: int, second_line: int):
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader (data, never code) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
            except TypeError:  # an unhashable key: SafeLoader's own error says so below
                break
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as err:
        raise ConfigError(f"{origin}: key {err.key!r} is given twice in the same section (lines "
                          f"{err.first_line} and {err.second_line}); write it once, the later one "
                          "would silently replace the earlier") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: not valid YAML: {err}") from None


def _read_one(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A config file's data with its `base:` chain resolved (the `base` key removed)."""
    path = Path(path)
    data = _read_one(path)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: {base!r} is not allowed; expected the path of another "
                          "config file, relative to this one (e.g. base: digits_base.yaml)")
    base_path = (path.parent / base).resolve()
    chain = _chain + (path.resolve(),)
    if base_path in chain:
        raise ConfigError(f"{path}: base: {base!r} makes a cycle: "
                          + " -> ".join(str(p) for p in chain + (base_path,)))
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base!r} not found (looked for {base_path})")
    return deep_merge(read_yaml(base_path, chain), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(
            f"--set {text!r}: expected dotted.key=value, e.g. --set train.batch_size=32"
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {text!r}: {key!r} is not a dotted key like train.batch_size")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {text!r}: {'.'.join(parts[: i + 1])} is {child!r}, not a section"
                )
            node = child
        node[parts[-1]] = value
    return data
