"""The CI gate of `tlab eval`: --min/--max bounds, their checks, and the refusals that keep a broken model or an
unwritable results path from passing for a score. Exit codes: 0 every bound holds, 1 a bound failed, 2 anything
else."""

from __future__ import annotations

import math
from pathlib import Path

from tlab.errors import TlabError

PASSED, FAILED, BROKEN = 0, 1, 2  # BROKEN: bad input, an unusable model or an unexpected error; never "a worse model"


def parse_bounds(items: list[str], flag: str) -> dict[str, float]:
    """["accuracy=0.9"] -> {"accuracy": 0.9}."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            found[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise TlabError(f"{flag} {item!r} is not of the form metric=value (e.g. accuracy=0.9)")
        if not math.isfinite(found[name.strip()]):
            raise TlabError(f"{flag} {item!r}: the bound must be a finite number")
    return found


def check_writable(output: str) -> None:
    """Refuse an --output that cannot be written before the evaluation runs, not after it (write_json creates
    missing folders, so the nearest existing one must take a new file: a probe file says so even for root)."""
    import tempfile

    target = Path(output).expanduser()
    if target.is_dir():
        raise TlabError(f"--output {output} is a folder: give a file name, e.g. {target / 'results.json'}")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TlabError(f"--output {output} cannot be written: {parent} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".tlab-probe-"):
            pass
    except OSError as exc:
        raise TlabError(f"--output {output} cannot be written: {parent} takes no new files ({exc.strerror or exc})") from None


def refuse_non_finite(metrics: dict, model: str) -> None:
    """A NaN/inf loss means NaN/inf outputs: the model is broken (a diverged run), which is not a score to gate on.
    Other metrics may be NaN for a finite model (Pearson of constant predictions); those only fail their gates."""
    loss = metrics.get("loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        raise TlabError(f"model outputs are not finite ({loss} loss): {model} is broken (diverged training?), not scored")


def gates(metrics: dict, bounds: list[tuple[str, str, float]]) -> list[dict]:
    """One record per --min/--max; a non-finite value passes no gate (inf >= 0.9 would otherwise hold)."""
    def holds(value, op: str, bound: float) -> bool:
        return math.isfinite(value) and (value >= bound if op == ">=" else value <= bound)

    return [{"metric": m, "op": op, "bound": v, "value": metrics[m], "passed": holds(metrics[m], op, v)}
            for m, op, v in bounds]
