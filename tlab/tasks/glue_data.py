"""GLUE task table and loaders: official GLUE TSV folders, the Hub copy (`nyu-mll/glue`), and users' own files.

Every loader returns a `datasets.Dataset` with the same columns -- `text_a`, `text_b` (pair tasks only) and
`label` (int64 class index, float32 for STS-B, -1 where the file has no labels) -- so the rest of tlab never
needs to know where the data came from. Label indices follow the Hub's ClassLabel order, so a model trained
on local TSVs and one trained on the Hub copy agree on what index 0 means.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Iterator, Mapping, Optional, Sequence

from tlab.errors import TlabError

if TYPE_CHECKING:
    import datasets

_FILES = MappingProxyType({"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"})
_MNLI_FILES = MappingProxyType({
    "train": "train.tsv", "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"})


@dataclass(frozen=True)
class GlueSpec:
    name: str                             # tlab's task name, e.g. "sst2"
    folder: str                           # folder in the GLUE distribution, e.g. "SST-2"
    hub_config: str                       # configuration of nyu-mll/glue
    text_a: str                           # column names in the TSV header
    text_b: Optional[str]
    label_column: str
    label_names: Optional[tuple[str, ...]]  # Hub ClassLabel order; None = regression (STS-B)
    raw_labels: Optional[tuple[str, ...]]   # value in the file for index 0, 1, ...
    metrics: tuple[str, ...]
    main_metric: str                      # the number GLUE papers report (BERT: F1 for MRPC/QQP, Spearman for STS-B)
    hub_text: tuple[str, Optional[str]]   # the Hub's names for text_a / text_b
    validation_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    split_files: Mapping[str, str] = field(default_factory=lambda: _FILES, hash=False)  # split -> file name
    column_names: Optional[tuple[str, ...]] = None  # only for headerless files (CoLA train/dev)
    score_range: Optional[tuple[float, float]] = None  # regression: the scale of the scores (STS-B: 0-5)
    multi_label: bool = False  # a set of labels per text, `label` multi-hot (tlab.tasks.multi_label)

    @property
    def has_header(self) -> bool:
        return self.column_names is None

    @property
    def label_map(self) -> dict[str, int]:
        """Raw file value -> class index, e.g. RTE {"entailment": 0, "not_entailment": 1}."""
        return {raw: i for i, raw in enumerate(self.raw_labels or ())}

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


# Positional fields: name, folder, hub_config, text_a, text_b, label_column, label_names, raw_labels, metrics,
# main_metric, hub_text.
_NLI = ("entailment", "not_entailment")
_01 = ("0", "1")
GLUE_TASKS: dict[str, GlueSpec] = {
    "cola": GlueSpec("cola", "CoLA", "cola", "sentence", None, "label", ("unacceptable", "acceptable"), _01,
                     ("matthews_correlation",), "matthews_correlation", ("sentence", None),
                     column_names=("source", "label", "original_label", "sentence")),
    "sst2": GlueSpec("sst2", "SST-2", "sst2", "sentence", None, "label", ("negative", "positive"), _01,
                     ("accuracy",), "accuracy", ("sentence", None)),
    "mrpc": GlueSpec("mrpc", "MRPC", "mrpc", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent"),
                     _01, ("f1", "accuracy"), "f1", ("sentence1", "sentence2")),
    "stsb": GlueSpec("stsb", "STS-B", "stsb", "sentence1", "sentence2", "score", None, None,
                     ("pearson", "spearmanr"), "spearmanr", ("sentence1", "sentence2"), score_range=(0.0, 5.0)),
    "qqp": GlueSpec("qqp", "QQP", "qqp", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate"),
                    _01, ("f1", "accuracy"), "f1", ("question1", "question2")),
    "mnli": GlueSpec("mnli", "MNLI", "mnli", "sentence1", "sentence2", "gold_label",
                     ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
                     ("accuracy",), "accuracy", ("premise", "hypothesis"),
                     validation_splits=("validation_matched", "validation_mismatched"),
                     test_splits=("test_matched", "test_mismatched"), split_files=_MNLI_FILES),
    "qnli": GlueSpec("qnli", "QNLI", "qnli", "question", "sentence", "label", _NLI, _NLI,
                     ("accuracy",), "accuracy", ("question", "sentence")),
    "rte": GlueSpec("rte", "RTE", "rte", "sentence1", "sentence2", "label", _NLI, _NLI,
                    ("accuracy",), "accuracy", ("sentence1", "sentence2")),
    "wnli": GlueSpec("wnli", "WNLI", "wnli", "sentence1", "sentence2", "label", ("not_entailment", "entailment"),
                     _01, ("accuracy",), "accuracy", ("sentence1", "sentence2")),
}


def get_spec(name: str) -> GlueSpec:
    key = name.strip().lower()
    if key in GLUE_TASKS:
        return GLUE_TASKS[key]
    close = difflib.get_close_matches(key, GLUE_TASKS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise TlabError(f"unknown task '{name}'; {hint}(known: {', '.join(GLUE_TASKS)})")


def resolve_task_dir(spec: GlueSpec, data_dir: str | Path) -> Path:
    """The folder holding the task's TSVs: DIR/<folder> (GLUE root given) or DIR itself (task folder given)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise TlabError(f"--data-dir {root} is not a folder")
    # Catch `--data-dir glue/RTE` with task sst2: RTE's train.tsv would otherwise fail later with a confusing
    # missing-column error.
    other = [s for s in GLUE_TASKS.values() if s is not spec and root.name.lower() in (s.folder.lower(), s.name)]
    if other and root.name.lower() not in (spec.folder.lower(), spec.name):
        raise TlabError(f"--data-dir {root} looks like the {other[0].folder} folder, but the task is {spec.name}; "
                        f"pass the GLUE root or the {spec.folder} folder")
    for cand in (root / spec.folder, root / spec.name, root):
        if any((cand / f).is_file() for f in spec.split_files.values()):
            return cand
    raise TlabError(f"no {spec.name} data in --data-dir {root}: expected {root / spec.folder}/train.tsv "
                    f"(GLUE root) or {root}/train.tsv (task folder)")


def available_splits(spec: GlueSpec, data_dir: str | Path) -> list[str]:
    folder = resolve_task_dir(spec, data_dir)
    return [split for split, fname in spec.split_files.items() if (folder / fname).is_file()]


def _lines(path: Path, newline: str) -> Iterator[str]:
    """Lines of a UTF-8 file; "-sig" drops MRPC's BOM so its first column is "Quality", not BOM + "Quality"."""
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            yield from f
    except UnicodeDecodeError as e:
        raise TlabError(f"{path} is not UTF-8 text (byte {e.start} cannot be decoded)") from None


def _table_records(path: Path, names: Optional[Sequence[str]] = None, tsv: bool = True) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) of each non-blank row, keyed by the header (or `names` if headerless).

    TSVs (GLUE's and users') are read unquoted: GLUE text holds bare `"`, which CSV quoting would swallow across
    lines. Splitting on newlines only (not str.splitlines) keeps rare U+0085 / U+2028 characters in the text.
    CSVs are ordinary quoted CSV; csv's line_num is where a row ends (quoted fields may span lines)."""
    if tsv:
        rows = ((n, line.rstrip("\n").rstrip("\r").split("\t")) for n, line in enumerate(_lines(path, "\n"), 1))
    else:
        reader = csv.reader(_lines(path, ""))
        rows = ((reader.line_num, fields) for fields in reader)
    header = names
    try:
        for lineno, fields in rows:
            if len(fields) <= 1 and not "".join(fields).strip():
                continue  # a truly blank line (a row of empty fields still has its tabs/commas and is kept)
            # CoLA train/dev have no header, but its official test.tsv does ("index<TAB>sentence").
            if header is None or (header is names and lineno == 1 and fields[0] == "index"):
                header = [h.strip() for h in fields]
                continue
            if len(fields) != len(header):
                kind = "tab" if tsv else "comma"
                raise TlabError(f"{path} line {lineno} has {len(fields)} {kind}-separated fields, "
                                f"expected {len(header)} as in the header")
            yield lineno, dict(zip(header, fields))
    except csv.Error as e:
        raise TlabError(f"{path} is not valid CSV: {e}") from None


def _json_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Records of a JSON Lines file, or of a .json file holding a list (or {"data": [...]}, as HF exports)."""
    if path.suffix.lower() == ".json":
        text = "".join(_lines(path, "\n"))
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # many ".json" files are really JSON Lines: read them as such below
        if isinstance(doc, dict) and len(doc) == 1 and isinstance(next(iter(doc.values())), list):
            doc = next(iter(doc.values()))
        if isinstance(doc, list):
            yield from enumerate(doc, 1)
            return
    for lineno, line in enumerate(_lines(path, "\n"), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise TlabError(f"{path} line {lineno} is not valid JSON ({e.msg})") from None


def _parse_label(value, accepted: Optional[Mapping[str, int]], path: Path, lineno: int,
                 score_range: Optional[tuple[float, float]] = None):
    """Class index via `accepted` (file value -> index), or a float for regression (accepted is None), which must be
    finite and, given a `score_range`, on the task's scale (a 0-100 or 0-1 file would train the wrong scale)."""
    if accepted is None:
        try:
            score = float(value)
        except (TypeError, ValueError):
            raise TlabError(f"label {value!r} in {path} line {lineno} is not a number (regression task)") from None
        if not math.isfinite(score):
            raise TlabError(f"score {value!r} in {path} line {lineno} is not a finite number")
        if score_range and not score_range[0] <= score <= score_range[1]:
            raise TlabError(f"score {value!r} in {path} line {lineno} is outside the task's scale "
                            f"{score_range[0]:g}-{score_range[1]:g}")
        return score
    key = value.strip() if isinstance(value, str) else value
    if isinstance(key, float) and key.is_integer():  # JSON may write class 1 as 1.0
        key = int(key)
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if isinstance(key, str) and key in accepted:
        return accepted[key]
    raise TlabError(f"unknown label {value!r} in {path} line {lineno}; expected one of {', '.join(accepted)}")


def _build(path: Path, records: Iterator[tuple[int, dict]], text_a: str, text_b: Optional[str],
           label_column: Optional[str], accepted: Optional[Mapping[str, int]], need_label: bool,
           score_range: Optional[tuple[float, float]] = None) -> datasets.Dataset:
    """text_a/text_b/label columns from (line number, record) pairs; columns are checked on the first record."""
    import datasets  # here, not at the top: `tlab tasks` reads the table above without loading datasets

    cols: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    names = [("text_a", text_a)] + ([("text_b", text_b)] if text_b else [])
    checked = has_label = False
    for lineno, rec in records:
        if not isinstance(rec, dict):
            raise TlabError(f"{path} record {lineno} is not an object with named fields")
        if not checked:
            has_label = label_column is not None and label_column in rec
            missing_columns(path, rec, [c for _, c in names] + ([label_column] if need_label else []))
            checked = True
        for out, col in names:
            value = rec.get(col)
            if not isinstance(value, str):  # JSON null / number / a key missing from a later record
                raise TlabError(f"{path} line {lineno}: column {col!r} holds {value!r}, not text")
            cols[out].append(value)
        if has_label and label_column not in rec:
            raise TlabError(f"{path} line {lineno} lacks column {label_column!r}")
        cols["label"].append(_parse_label(rec[label_column], accepted, path, lineno, score_range) if has_label else -1)
    if not checked:
        raise TlabError(f"{path} is empty (no data rows)")
    if not text_b:
        del cols["text_b"]
    features = datasets.Features({k: datasets.Value("string") for k in cols if k != "label"})
    features["label"] = datasets.Value("float32" if accepted is None else "int64")
    return datasets.Dataset.from_dict(cols, features=features)


def _check_split(spec: GlueSpec, split: str) -> None:
    if split not in spec.split_files:
        raise TlabError(f"task {spec.name} has no split '{split}' (splits: {', '.join(spec.split_files)})")


def load_glue_split(spec: GlueSpec, data_dir: str | Path, split: str) -> datasets.Dataset:
    """One split of a GLUE task from its official TSV file (DIR/<folder>/<file> or DIR/<file>)."""
    _check_split(spec, split)
    path = resolve_task_dir(spec, data_dir) / spec.split_files[split]
    if not path.is_file():
        raise TlabError(f"{spec.name} {split} data not found: {path} does not exist; point --data-dir at the GLUE "
                        f"root or the {spec.folder} folder holding {spec.split_files[split]}")
    # Official files are read strictly: only their own label values. Test files carry no labels (-> -1).
    return _build(path, _table_records(path, spec.column_names), spec.text_a, spec.text_b, spec.label_column,
                  None if spec.is_regression else spec.label_map, need_label=split not in spec.test_splits,
                  score_range=spec.score_range)


def load_glue_hub(spec: GlueSpec, split: str) -> datasets.Dataset:
    """One split of `nyu-mll/glue` (needs the Hub or a filled cache), with tlab's column names."""
    import datasets

    _check_split(spec, split)
    try:
        ds = datasets.load_dataset("nyu-mll/glue", spec.hub_config, split=split)
    except Exception as e:  # offline, DNS, missing cache: all end the same way for the user
        raise TlabError(f"could not load GLUE {spec.name} from the Hugging Face Hub ({type(e).__name__}); the Hub "
                        "cannot be reached, so pass --data-dir DIR with GLUE TSV files "
                        "(or --train-file/--validation-file)") from None
    a, b = spec.hub_text
    keep = {a: "text_a", **({b: "text_b"} if b else {}), "label": "label"}
    ds = ds.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
    # ClassLabel -> plain int64 so Hub and TSV datasets have identical features (test labels stay -1).
    return ds.cast_column("label", datasets.Value("float32" if spec.is_regression else "int64"))


def read_records(path: str | Path, official_names: Optional[Sequence[str]] = None,
                 text_column: Optional[str] = None) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) of a user's .csv (quoted CSV), .tsv (unquoted, like GLUE), .json or .jsonl.

    `official_names`: the columns of a GLUE task whose official TSVs have no header (CoLA); a .tsv whose first row
    has that many fields and not `text_column` is such a file (a copy of train.tsv given as --train-file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TlabError(f"data file {path} does not exist")
    ext = path.suffix.lower()
    if ext not in (".csv", ".tsv", ".json", ".jsonl"):
        raise TlabError(f"cannot read {path}: use a .csv, .tsv, .json or .jsonl file")
    if ext.startswith(".json"):
        return _json_records(path)
    names = None
    if ext == ".tsv" and official_names:
        first = next((line for line in _lines(path, "\n") if line.strip()), "").rstrip("\r\n").split("\t")
        names = official_names if len(first) == len(official_names) and text_column not in first else None
    return _table_records(path, names, tsv=ext == ".tsv")


def missing_columns(path: Path, record: dict, wanted: Sequence[Optional[str]]) -> None:
    """One error naming every wanted column the (first) record lacks, and the columns it has."""
    missing = [c for c in wanted if c is not None and c not in record]
    if missing:
        raise TlabError(f"{path} lacks column(s) {', '.join(map(repr, missing))}; it has: {', '.join(map(repr, record))}")


def load_custom_file(path: str | Path, text_a: str, text_b: Optional[str], label_column: Optional[str],
                     label_names: Optional[Sequence[str]], *, require_label: bool = True,
                     score_range: Optional[tuple[float, float]] = None, indices: bool = True,
                     official_names: Optional[Sequence[str]] = None) -> datasets.Dataset:
    """A user's .csv (quoted CSV), .tsv (unquoted, like GLUE), .json or .jsonl file as text_a/text_b/label.

    Labels may be names (e.g. "positive") or, with `indices`, indices into label_names (off for label sets read
    off the data, whose names may themselves be numbers: "5" must not mean the sixth name); label_names None
    means regression (float labels). With require_label=False a file without the label column gets label -1.
    `official_names`: see read_records (CoLA's headerless layout)."""
    path = Path(path).expanduser()
    if label_column is None and require_label:
        raise TlabError(f"no label column was given for {path}")
    records = read_records(path, official_names, text_a)
    accepted = None if label_names is None else (
        ({str(i): i for i in range(len(label_names))} if indices else {}) | {n: i for i, n in enumerate(label_names)})
    return _build(path, records, text_a, text_b, label_column, accepted, need_label=require_label,
                  score_range=score_range)


def held_out_by_sentence(train, fraction: float, seed: int):
    """Split off `fraction` of the distinct first sentences as split "heldout": a sentence seen in validation is
    never trained on (SST-2 repeats phrases, so a row-level split would leak). Depends only on the text and the
    seed, so `tlab eval` with the same --data-dir and seed finds the same held-out rows."""

    def held(text: str) -> bool:
        digest = hashlib.sha1(f"{seed}:{text.strip().lower()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    sentences = len({t.strip().lower() for t in train["text_a"]})
    if sentences * fraction < 1:  # a hash split would hold out nothing, or by chance far more than `fraction`
        raise TlabError(f"the training data is too small to hold out validation ({sentences} distinct sentences x "
                        f"data.validation_fraction {fraction:g} < 1): give --validation-file")
    flags = [held(t) for t in train["text_a"]]
    validation = train.select([i for i, f in enumerate(flags) if f])
    rest = train.select([i for i, f in enumerate(flags) if not f])
    if len(validation) == 0 or len(rest) == 0:
        raise TlabError("the training file is too small to hold out a validation part; give --validation-file")
    return {"heldout": validation}, rest


def in_both_orders(train):
    """Each pair as given and as (text_b, text_a), for labels that do not depend on the order (data.both_orders)."""
    import datasets

    if "text_b" not in train.column_names:
        raise TlabError("data.both_orders needs sentence pairs: this task's examples are single texts")
    swapped = train.rename_columns({"text_a": "text_b", "text_b": "text_a"}).select_columns(train.column_names)
    return datasets.concatenate_datasets([train, swapped.cast(train.features)])
