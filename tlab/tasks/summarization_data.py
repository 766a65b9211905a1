"""Documents and their reference summaries for summarization, as one schema of `source` (the document), `target`
(the summary), `id` and `line` (the record's line or position in its file, so outputs can be matched to it).

Read from --train-file / --validation-file (SAMSum's JSON arrays of {id, dialogue, summary}, JSON Lines, quoted
CSV, TSV; the columns named by --text-column and --summary-column, default the task's own), from --data-dir
(train.* and val.* / validation.* / dev.*), or from the task's Hub dataset. Windows line ends are made plain
newlines (most SAMSum dialogues separate their turns with \\r\\n). A training pair with an empty side is dropped
and said (SAMSum's train split has one empty dialogue); validation pairs must have both, so every reference is
scored. Without validation data, `data.validation_fraction` of the training documents is held out by a hash of
the seed and the document, so `tlab eval` of the run finds the same ones again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence

from tlab.errors import TlabError
from tlab.tasks import glue_data

# task -> (Hub dataset, its config, document column, summary column)
SUMMARIZATION_TASKS = {
    "samsum": ("knkarthick/samsum", None, "dialogue", "summary"),
    "xsum": ("EdinburghNLP/xsum", None, "document", "summary"),
    "cnn_dailymail": ("abisee/cnn_dailymail", "3.0.0", "article", "highlights"),
}
GENERIC_COLUMNS = ("text", "summary")  # --task summarization's columns when no flag names them
_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
_SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "val", "valid", "dev")}


def columns(params: dict, cfg) -> tuple[str, str]:
    """(document column, summary column): the flags' (--text-column, --summary-column), else the task's own."""
    own = params.get("columns") or GENERIC_COLUMNS
    return cfg.data.text_a_column or own[0], cfg.summarization.summary_column or own[1]


def normalise(value: str) -> str:
    """Windows (and old Mac) line ends as plain newlines."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def read_file(path: str, text_column: str, summary_column: str) -> list[dict]:
    """Rows of one file; a missing column is named with the flag that picks it, an empty file refused."""
    rows = []
    for lineno, record in glue_data.read_records(path):
        if not isinstance(record, dict):
            raise TlabError(f"{path} record {lineno} is not an object with named fields (got {type(record).__name__})")
        if not rows:
            for column, flag in ((text_column, "--text-column"), (summary_column, "--summary-column")):
                if column not in record:
                    raise TlabError(f"{path} has no column {column!r} (it has: {', '.join(map(repr, record))}): "
                                    f"name the {'document' if flag == '--text-column' else 'summary'} column with {flag}")
        values = [record.get(text_column), record.get(summary_column)]
        for column, value in zip((text_column, summary_column), values):
            if not isinstance(value, str):  # JSON null / a number / a key missing from a later record
                raise TlabError(f"{path} line {lineno}: column {column!r} holds {value!r}, not text")
        ident = record.get("id")
        rows.append({"source": normalise(values[0]), "target": normalise(values[1]),
                     "id": str(ident) if ident is not None else str(lineno), "line": lineno})
    if not rows:
        raise TlabError(f"{path} is empty (no records)")
    return rows


def load_hub(hub: Optional[tuple[str, Optional[str]]], split: str, text_column: str, summary_column: str) -> list[dict]:
    """A split of a Hub summarization dataset, `hub` = (dataset id, config); None: the task has none."""
    import datasets

    if not hub or not hub[0]:
        raise TlabError("--task summarization reads your files: give --train-file (JSON, JSON Lines, CSV or TSV with "
                        "--text-column / --summary-column), --data-dir, or data.dataset (a Hub id)")
    name, config = hub
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, DNS, missing cache: all end the same way for the user
        raise TlabError(f"could not load {name}{f' ({config})' if config else ''} {split} from the Hugging Face Hub "
                        f"({type(e).__name__}); offline, pass --train-file and --validation-file") from None
    missing = [c for c in (text_column, summary_column) if c not in ds.column_names]
    if missing:
        raise TlabError(f"{name} has no column {missing[0]!r} (it has: {', '.join(ds.column_names)}): name the "
                        "columns with --text-column / --summary-column")
    ids = ds["id"] if "id" in ds.column_names else [str(n) for n in range(1, len(ds) + 1)]
    return [{"source": normalise(s or ""), "target": normalise(t or ""), "id": str(i), "line": n}
            for n, (s, t, i) in enumerate(zip(ds[text_column], ds[summary_column], ids), 1)]


def _data_dir_files(data_dir: str) -> dict[str, str]:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise TlabError(f"--data-dir {data_dir} is not a folder")
    found = {}
    for split, stems in _SPLIT_STEMS.items():
        path = next((root / f"{stem}{s}" for stem in stems for s in _SUFFIXES if (root / f"{stem}{s}").is_file()), None)
        if path is not None:
            found[split] = str(path)
    if "train" not in found:
        raise TlabError(f"no summarization data in --data-dir {root}: expected train.json (or .jsonl / .csv / .tsv)")
    return found


def _drop_empty(rows: list[dict], where: str, log) -> list[dict]:
    kept = [r for r in rows if r["source"].strip() and r["target"].strip()]
    if len(kept) < len(rows):
        first = next(r for r in rows if not (r["source"].strip() and r["target"].strip()))
        log(f"skipped {len(rows) - len(kept)} training pair(s) of {where} with an empty document or summary "
            f"(first: line {first['line']}, id {first['id']})")
    if not kept:
        raise TlabError(f"{where} holds no pair with both a document and a summary")
    return kept


def _refuse_empty(rows: list[dict], where: str) -> None:
    for r in rows:
        if not r["source"].strip() or not r["target"].strip():
            side = "document" if not r["source"].strip() else "summary"
            raise TlabError(f"{where} line {r['line']} (id {r['id']}) has an empty {side}: validation pairs need both "
                            "(every reference is scored)")


def held_out(rows: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(validation, training): documents whose hash with the seed falls below `fraction`; depends only on the
    text and the seed, so the same documents are held out whatever the order of the file."""
    def held(text: str) -> bool:
        digest = hashlib.sha1(f"{seed}:{text.strip()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    flags = [held(r["source"]) for r in rows]
    validation = [r for r, f in zip(rows, flags) if f]
    rest = [r for r, f in zip(rows, flags) if not f]
    if not validation or not rest:
        raise TlabError(f"the training data ({len(rows)} documents) is too small to hold out data.validation_fraction "
                        f"{fraction:g} of it: give --validation-file")
    return validation, rest


def _dataset(rows: list[dict]):
    import datasets

    text = datasets.Value("string")
    return datasets.Dataset.from_list(rows, features=datasets.Features(
        {"source": text, "target": text, "id": text, "line": datasets.Value("int32")}))


def load(cfg, params: dict, train: bool, log) -> tuple:
    """(training Dataset or None, validation Dataset, notes) from files, --data-dir or the Hub."""
    d = cfg.data
    text_column, summary_column = columns(params, cfg)
    files = {"train": list(d.train_files)} if d.train_files else {}
    if d.data_dir:
        for split, path in _data_dir_files(d.data_dir).items():
            files.setdefault(split, [path])
    if d.validation_file:
        files["validation"] = [d.validation_file]
    hub = (d.dataset, d.dataset_config) if d.dataset else (params.get("hub"), params.get("hub_config"))

    def rows_of(split: str) -> tuple[list[dict], str]:
        if split in files:
            return [r for f in files[split] for r in read_file(f, text_column, summary_column)], ", ".join(files[split])
        return load_hub(hub, split, text_column, summary_column), f"{hub[0]} {split}"

    notes: dict = {"columns": f"{text_column} -> {summary_column}"}
    if "validation" in files or "train" not in files:
        valid, where = rows_of("validation")
        _refuse_empty(valid, where)
        trained = _drop_empty(*rows_of("train"), log) if train else None
        notes["validation"] = where
    else:  # training files only: hold part of them out
        if d.validation_fraction <= 0:
            raise TlabError("no validation data: give --validation-file (or data.validation_fraction > 0 to hold out "
                            "part of the training data)")
        rows, where = rows_of("train")
        valid, trained = held_out(_drop_empty(rows, where, log), d.validation_fraction, cfg.train.seed)
        trained = trained if train else None
        notes["validation"] = (f"carve-out: {d.validation_fraction:g} of the training documents held out "
                               f"(data.validation_fraction, seed {cfg.train.seed}), never trained on")
    if trained is not None and d.max_train_samples:
        trained = trained[: d.max_train_samples]
    if d.max_eval_samples:
        valid = valid[: d.max_eval_samples]
    return (_dataset(trained) if trained is not None else None), _dataset(valid), notes
