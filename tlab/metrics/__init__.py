"""tlab's metrics: `evaluate.Metric` modules shipped in this folder and loaded by path, so `evaluate`'s API
(`add_batch`, `compute`) works offline. Any other name is passed to `evaluate.load` (a Hub metric, online).

`evaluate` is imported inside the functions: it pulls in `datasets` and `pandas`, which a CLI that only prints
`--help` should not pay for."""

from __future__ import annotations

import inspect
import numbers
from pathlib import Path
from typing import Any, Sequence

LOCAL_METRICS = ("accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr", "squad", "squad_v2", "sacrebleu", "chrf", "seqeval",
                 "multi_label", "rouge")
# Names that tasks use for a metric's result key where it differs from the module name.
_MODULE_OF = {"pearson": "pearsonr"}
# Named settings of a module, reported under their own name: macro_f1 is f1 with average="macro" (the unweighted
# mean of the per-class F1 over the classes in the references or the predictions), what multi-class tasks report.
VARIANTS = {"macro_f1": ("f1", {"average": "macro"})}


def path(name: str) -> Path | None:
    """The file of a local metric, or None when `name` is not one of tlab's."""
    module = _MODULE_OF.get(name, name)
    return Path(__file__).with_name(f"{module}.py") if module in LOCAL_METRICS else None


def load(name: str, **load_kwargs):
    """`evaluate.load` for tlab's metrics by file path (offline) and for any other name from the Hub.

    A fresh module each call, never a cached one: a module holds the batches added to it, and two callers
    sharing one would mix their examples. `load_kwargs` go to `evaluate.load` (num_process, process_id,
    experiment_id for a distributed run)."""
    import evaluate

    source = path(name)
    return evaluate.load(str(source) if source is not None else name, **load_kwargs)


def _accepts(module, key: str) -> bool:
    parameters = inspect.signature(module._compute).parameters
    return key in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def compute(names: Sequence[str], predictions, references, **kwargs: Any) -> dict[str, float]:
    """Every named metric on the same predictions and references, merged into one flat dict of floats.

    Keyword arguments are shared: each goes to the metrics whose `_compute` takes it, so
    `compute(["accuracy", "f1"], p, r, average="macro")` gives F1 a macro average and leaves accuracy alone.
    A keyword named after one of `names` with a dict value is that metric's own (`f1={"average": "macro"}`);
    a name in `VARIANTS` (`macro_f1`) is a module with fixed settings, reported under that name.
    Only scalar numbers are kept, as floats, so the result can go straight to JSON and to comparisons;
    strings such as sacrebleu's signature come from `load(name).compute(...)`."""
    own = {k: kwargs.pop(k) for k in list(kwargs) if k in names and isinstance(kwargs[k], dict)}
    modules = {name: load(VARIANTS[name][0] if name in VARIANTS else name) for name in names}
    unused = [k for k in kwargs if not any(_accepts(m, k) for m in modules.values())]
    if unused:
        # A typo such as avarage= would otherwise be dropped silently and the default reported as if chosen.
        raise TypeError(f"no metric among {', '.join(names)} takes {', '.join(unused)}")
    results: dict[str, float] = {}
    for name, module in modules.items():
        base, fixed = VARIANTS.get(name, (name, {}))
        options = {**{k: v for k, v in kwargs.items() if _accepts(module, k)}, **fixed, **own.get(name, {})}
        scores = module.compute(predictions=predictions, references=references, **options)
        if name in VARIANTS:  # f1 -> macro_f1; a variant must not overwrite its module's own key (f1 beside macro_f1)
            scores = {name: scores[base]}
        results.update({key: float(value) for key, value in scores.items() if isinstance(value, numbers.Number)})
    return results
