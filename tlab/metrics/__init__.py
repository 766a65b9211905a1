"""tlab's metrics: `evaluate.Metric` modules shipped in this folder and loaded by path, so `evaluate`'s API
(`add_batch`, `compute`) works offline. Any other name is passed to `evaluate.load` (a Hub metric, online)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

LOCAL_METRICS = ("accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr")
# Result keys that differ from the module names.
_MODULE_OF = {"pearson": "pearsonr"}
_LOADED: dict[str, Any] = {}


def load(name: str):
    import evaluate

    module = _MODULE_OF.get(name, name)
    if module not in _LOADED:
        source = Path(__file__).with_name(f"{module}.py")
        _LOADED[module] = evaluate.load(str(source) if module in LOCAL_METRICS else module)
    return _LOADED[module]


def compute(names: Sequence[str], predictions, references, **kwargs) -> dict[str, float]:
    """Every named metric on the same predictions and references, merged into one flat dict of floats."""
    results: dict[str, float] = {}
    for name in names:
        scores = load(name).compute(predictions=predictions, references=references, **kwargs.get(name, {}))
        results.update({key: float(value) for key, value in scores.items()})
    return results
