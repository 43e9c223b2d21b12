"""The wheel must carry every sub-package and the default config."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "kerastl").rglob("__init__.py")
    }
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
    assert "kerastl.configs" in listed and (ROOT / "configs" / "default.yaml").exists()


def _imports() -> dict[str, set[str]]:
    """kerastl module -> the kerastl modules it imports (at the top or inside functions)."""
    import ast

    modules = {}
    for path in (ROOT / "kerastl").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path

    def owner(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            found |= {owner(t) for t in targets if t.startswith("kerastl")} - {"", name}
        edges[name] = found
    return edges


def test_no_import_cycles_in_the_package():
    edges = _imports()
    cycles = []

    def visit(node, stack, done):
        for nxt in sorted(edges[node]):
            # A package's __init__ importing its own submodules is not a cycle of ours.
            if nxt in stack and not nxt.startswith(node + ".") and not node.startswith(nxt + "."):
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done and nxt not in stack:
                visit(nxt, stack + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module], done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
