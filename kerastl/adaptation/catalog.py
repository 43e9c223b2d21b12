"""The domain adaptation methods and their hyper-parameters, without TensorFlow.

Each method module declares its methods at its top with `declare(...)`: the name in YAML
(`adapt.method`), the class, a one-line summary, and each hyper-parameter (`adapt.params`)
with its type, default and valid range. This module reads those statements from the
modules' source without importing them, so config validation fails on a bad `adapt`
section in well under a second, before TensorFlow is imported. This is the one registry of
methods: `MethodSpec.load()` imports a method's class, and a class finds its own
declaration (`spec_of`) for its name and checked parameters.

Adding a method: one module in this package (a `declare(...)` statement and the
`AdaptationModel` subclass it names) and a config that uses it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from kerastl.errors import ConfigError
from kerastl.registry import Registry


class ParamError(ConfigError):
    """A method parameter that does not validate: `adapt.params.<key>`, its value, and what
    is allowed (the config check turns it into its own message)."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"adapt.params.{key}: {value!r} is not allowed; expected {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyper-parameter: type (bool, int or float), default, inclusive range, meaning."""

    default: Any
    help: str
    low: float | None = None
    high: float | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> Any:
        """`value` converted to the type, or ValueError saying what is allowed."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError("true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("an integer" if self.type is int else "a number")
        if self.type is int and not isinstance(value, int):
            raise ValueError("an integer")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            bounds = (f"between {self.low} and {self.high}" if self.low is not None and self.high is not None
                      else f">= {self.low}" if self.low is not None else f"<= {self.high}")
            raise ValueError(f"{'an integer' if self.type is int else 'a number'} {bounds}")
        return self.type(value)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    target: str  # "module:Class", imported only when the method is built
    summary: str
    params: dict[str, Param] = dataclasses.field(default_factory=dict)

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.params.items()}

    def check_params(self, given: dict) -> dict:
        """The full parameter dict (defaults + `given`), or KeyError/ValueError(name, allowed)."""
        out = self.defaults()
        for name, value in given.items():
            if name not in self.params:
                raise KeyError(name)
            try:
                out[name] = self.params[name].check(value)
            except ValueError as err:
                raise ValueError(name, str(err)) from None
        return out

    def validated(self, given: dict) -> dict:
        """`check_params`, with a mistake raised as ParamError."""
        try:
            return self.check_params(given)
        except KeyError as err:
            name = err.args[0]
            raise ParamError(name, given[name], f"a parameter of {self.name}: "
                             f"{', '.join(self.params) or 'it takes none'}") from None
        except ValueError as err:
            name, allowed = err.args
            raise ParamError(name, given[name], allowed) from None

    def load(self):
        """The method's class (importing its module, and so TensorFlow)."""
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


CATALOG: Registry[MethodSpec] = Registry("adaptation method")

# Shared by the adversarial methods' declarations (dann, cdan, cdan+e, mdd).
ADVERSARIAL = {
    "gamma": Param(10.0, "steepness of lambda_p = 2 / (1 + exp(-gamma p)) - 1", 0.0, 1000.0),
    "max_lambda": Param(1.0, "the gradient-reversal coefficient lambda_p is scaled to this", 0.0, 100.0),
    "hidden": Param(1024, "units of the discriminator's two hidden layers", 1, None),
    "dropout": Param(0.5, "dropout after each discriminator hidden layer", 0.0, 0.95),
}


def declare(name: str, cls: str, summary: str, **params: Param) -> MethodSpec:
    """Declares method `name`, implemented by class `cls` of the module this statement is in.

    Written at the top level of a method module. The catalog reads these statements from
    the module's source without importing it (see `_scan`); when the module itself is
    imported, the statement just returns the declared spec.
    """
    return CATALOG.get(name)


def _scan():
    """Registers the `declare(...)` statements of every module in this package.

    They are evaluated from the parsed source with only `Param` and `ADVERSARIAL` in
    scope, so declaring a method never imports TensorFlow.
    """
    import ast
    from pathlib import Path

    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem in ("__init__", "base", "catalog"):
            continue
        module = f"{__package__}.{path.stem}"

        def register(name, cls, summary, _module=module, **params):
            return CATALOG.register(name, MethodSpec(name, f"{_module}:{cls}", summary, params))

        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "declare":
                try:
                    eval(compile(ast.Expression(call), str(path), "eval"),  # noqa: S307 (our own source)
                         {"__builtins__": {}, "declare": register, "Param": Param, "ADVERSARIAL": ADVERSARIAL})
                except NameError as err:
                    raise ImportError(f"{path}:{node.lineno}: a method declaration may use only literals, "
                                      f"Param and ADVERSARIAL ({err})") from None


_scan()


def spec_of(cls) -> MethodSpec:
    """The declaration of method class `cls` (or of the declared class it derives from)."""
    for klass in cls.__mro__:
        target = f"{klass.__module__}:{klass.__qualname__}"
        for _, spec in CATALOG.items():
            if spec.target == target:
                return spec
    raise TypeError(f"{cls.__module__}:{cls.__qualname__} is not a declared adaptation method: add a "
                    "declare(...) statement naming it to its module")
