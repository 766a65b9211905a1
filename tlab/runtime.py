"""Placeholder: replaced by the runtime module of the loop split (merge takes the other side)."""

from __future__ import annotations


def quiet_libraries() -> None:
    """tlab prints its own progress; the libraries' per-step bars and advice would bury it."""
    import logging
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    # accelerate warns at every checkpoint that tied weights (shared embeddings) are stored once: by design
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
