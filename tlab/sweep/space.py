"""The search space of a sweep, one parameter per string, the same on the command line (`--space`) and in a YAML
`sweep:` block:

    train.lr=1e-5:2e-4:log     float, log-uniform between the bounds
    train.warmup=0:0.2         float, uniform
    train.batch_size=8:32      int (both bounds are ints), uniform; `:log` works too
    train.epochs=2,3,4         categorical: ints, floats, true/false, null and strings, each parsed as written

A comma makes a categorical (so `model.freeze=none,layers:2` is two choices), otherwise a colon makes a range. Nothing
here imports optuna: the space is parsed and checked before a study exists (and by `--dry-run`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

from tlab import config
from tlab.errors import TlabError

Choice = Union[None, bool, int, float, str]
_INT = re.compile(r"[+-]?\d+")
FORMS = "key=lo:hi (uniform), key=lo:hi:log (log-uniform) or key=a,b,c (categorical)"


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a dotted config key and its range or choices."""

    key: str
    kind: str  # float | int | categorical
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: tuple[Choice, ...] = ()

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key}: one of {', '.join(map(_show, self.choices))}"
        return f"{self.key}: {self.kind} {_show(self.low)} .. {_show(self.high)}{' (log)' if self.log else ''}"

    def extremes(self) -> tuple[Choice, ...]:
        """The values a trial may get at the edges of the space (checked against the config before a sweep starts)."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def suggest(self, trial) -> Any:
        """This parameter's value for an optuna trial (a fixed value when the trial was enqueued, e.g. a re-run)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def distribution(self):
        """Optuna's distribution of this parameter (what `trial.suggest_*` would record)."""
        from optuna import distributions as d

        if self.kind == "categorical":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(self.low, self.high, log=self.log)


def parse(text: str) -> Param:
    """One `key=spec` string -> Param, or one TlabError line naming the string and what is wrong with it."""
    key, sep, spec = (part.strip() for part in str(text).partition("="))
    if not sep or not key or not spec:
        raise TlabError(f"search space {text!r}: expected {FORMS}")
    config.check_key(key)
    if "," in spec:
        return Param(key, "categorical", choices=_choices(text, spec))
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        hint = "; a fixed value is an override (key=value), not a search space" if len(parts) == 1 else ""
        raise TlabError(f"search space {text!r}: expected {FORMS}{hint}")
    low, high = (_number(text, p) for p in parts[:2])
    log = len(parts) == 3
    if not low < high:
        raise TlabError(f"search space {text!r}: the lower bound must be below the upper one")
    if log and low <= 0:
        raise TlabError(f"search space {text!r}: a log range needs bounds > 0")
    if isinstance(low, int) and isinstance(high, int):
        return Param(key, "int", low, high, log)
    return Param(key, "float", float(low), float(high), log)


def parse_all(texts: list[str]) -> list[Param]:
    """Several strings; a key given twice is refused (CLI `--space` entries replace the YAML's first: `merge`)."""
    params = [parse(t) for t in texts]
    seen: set[str] = set()
    for p in params:
        if p.key in seen:
            raise TlabError(f"search space: {p.key} is given twice")
        seen.add(p.key)
    return params


def merge(base: list[str], given: list[str]) -> list[str]:
    """The YAML block's space with the command line's `--space` entries added, replacing those of the same key."""
    keys = {str(t).partition("=")[0].strip() for t in given}
    return [t for t in base if str(t).partition("=")[0].strip() not in keys] + list(given)


def from_yaml(value: Any) -> list[str]:
    """A `sweep.space` of a YAML file: a list of key=spec strings, or a mapping key: spec (a spec given as a YAML
    list is categorical)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={','.join(_yaml_text(c) for c in v) if isinstance(v, list) else _yaml_text(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TlabError("sweep.space must be a list of key=spec strings or a mapping of key: spec (e.g. train.lr: 1e-5:2e-4:log)")


def check(base: config.RunConfig, params: list[Param]) -> None:
    """Every edge of every range and every choice is a valid value of its key (train.lr=0:1 fails here, once)."""
    if not params:
        raise TlabError(f"a sweep needs a search space: --space {FORMS} (repeatable), or sweep.space in the YAML")
    for p in params:
        for value in p.extremes():
            try:
                config.with_values(base, {p.key: value})
            except TlabError as exc:
                raise TlabError(f"search space {p.key}: {_show(value)} is not a valid value ({exc})") from None


def _choices(text: str, spec: str) -> tuple[Choice, ...]:
    items = [item.strip() for item in spec.split(",")]
    if any(not item for item in items):
        raise TlabError(f"search space {text!r}: an empty choice (two commas, or one at an end)")
    values = tuple(_scalar(item) for item in items)
    if len({(type(v), v) for v in values}) < len(values):
        raise TlabError(f"search space {text!r}: a choice is given twice")
    return values


def _scalar(item: str) -> Choice:
    lowered = item.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):  # YAML's; "none" stays a string (model.freeze=none,encoder)
        return None
    try:
        return _as_number(item)
    except ValueError:
        return item.strip("'\"")


def _as_number(item: str) -> Union[int, float]:
    if _INT.fullmatch(item):
        return int(item)
    value = float(item)
    if not math.isfinite(value):
        raise ValueError(item)
    return value


def _number(text: str, item: str) -> Union[int, float]:
    try:
        return _as_number(item)
    except ValueError:
        raise TlabError(f"search space {text!r}: {item!r} is not a number") from None


def _yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)
