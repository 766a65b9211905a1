"""Sequence classification beyond GLUE, for the glue family (the loader its tasks name in `params["loader"]`):
`classification`, any number of classes on a user's labelled CSV / TSV / JSON Lines files (or a Hub dataset,
`data.dataset`), and `imdb`, IMDB's movie reviews (`--data-dir` with train.jsonl, or the Hub's stanfordnlp/imdb).

Returns what `glue.load_glue` returns: the task's spec with its label names, the training set, the validation
sets and notes for the start summary. The label set of `classification` is discovered from the training data
(sorted; integer labels in numeric order) and so saved in the model's config (id2label / label2id); `tlab eval`
reads it back from there, never rediscovering it. Without a validation file (or split), `data.validation_fraction`
of the training texts is held out (glue_data.held_out_by_sentence) and the summary says it is a carve-out.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional, Sequence

from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import glue_data
from tlab.tasks.glue_data import GlueSpec

METRICS = ("accuracy", "macro_f1")
# label_names=(): discovered from the training data (a GlueSpec with None is regression)
CLASSIFICATION = GlueSpec("classification", "", "", "text", None, "label", (), None, METRICS, "accuracy", ("text", None))
IMDB_HUB = "stanfordnlp/imdb"
IMDB = GlueSpec("imdb", "imdb", "plain_text", "text", None, "label", ("neg", "pos"), ("0", "1"), METRICS, "accuracy",
                ("text", None))
# --data-dir: the training file and, if present, the validation file (the first name found of each)
_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
_VALIDATION_NAMES = ("validation", "dev", "test")
_INTEGER = re.compile(r"-?\d+")


def label_key(value, path, lineno: int) -> str:
    """A label as the text it is matched by (strings stripped, 1 and 1.0 as "1"), as glue_data reads labels."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise TlabError(f"label {value!r} in {path} line {lineno} is neither a name nor an integer")


def discover(keys: Sequence[str]) -> tuple[str, ...]:
    """The label set of the training data: sorted, and in numeric order when every label is an integer
    (2 before 10, -1 before 0)."""
    found = set(keys)
    if all(_INTEGER.fullmatch(k) for k in found):
        return tuple(sorted(found, key=lambda k: (int(k), k)))
    return tuple(sorted(found))


def file_labels(path: str, columns: Sequence[Optional[str]], label_column: str) -> list[tuple[int, str]]:
    """(line number, label) of every record; the columns are checked on the first record."""
    found = []
    for lineno, rec in glue_data.read_records(path):
        if not isinstance(rec, dict):
            raise TlabError(f"{path} record {lineno} is not an object with named fields")
        if not found:
            glue_data.missing_columns(Path(path), rec, [*columns, label_column])
        if label_column not in rec:
            raise TlabError(f"{path} line {lineno} lacks column {label_column!r}")
        found.append((lineno, label_key(rec[label_column], path, lineno)))
    if not found:
        raise TlabError(f"{path} is empty (no data rows)")
    return found


def model_labels(path: str, trust_remote_code: bool = False, multi_label: Optional[bool] = None) -> tuple[str, ...]:
    """The label names a fine-tuned classifier was saved with (its config's id2label), in index order; given
    `multi_label`, the classifier must be of that kind (before its labels are matched against the data)."""
    from transformers import AutoConfig

    from tlab import finetuning

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise TlabError(f"{path} holds no sequence classifier (architectures: {config.architectures}); fine-tune it first")
    if multi_label is not None:
        finetuning.check_problem_type(path, config, multi_label)
    return tuple(str(config.id2label[i]) for i in sorted(config.id2label, key=int))


def _check_known(path: str, labels: list[tuple[int, str]], names: Sequence[str], whose: str) -> None:
    for lineno, key in labels:
        if key not in names:
            raise TlabError(f"label {key!r} in {path} line {lineno} {whose} (labels: {', '.join(names)}); a classifier "
                            "cannot predict a class it never trained on: add its examples to the training data or drop them")


def _read(spec: GlueSpec, cfg: RunConfig, files: Sequence[str], names: Optional[Sequence[str]], whose: str):
    """(dataset, label names) of the files; `names` None = discover them from the files (training)."""
    d = cfg.data
    text_a, text_b = d.text_a_column or spec.text_a, d.text_b_column or spec.text_b
    label = d.label_column or spec.label_column
    if spec.label_names:  # a benchmark's fixed labels (IMDB): names or their indices (0 = neg), as GLUE files
        names, indices = spec.label_names, True
    else:
        labels = {f: file_labels(f, [text_a, text_b], label) for f in files}
        if names is None:
            names = discover([k for found in labels.values() for _, k in found])
        for f, found in labels.items():
            _check_known(f, found, names, whose)
        indices = False  # discovered names may be numbers themselves: "5" is a name, not the sixth class
    parts = [glue_data.load_custom_file(f, text_a, text_b, label, names, indices=indices) for f in files]
    if len(parts) == 1:
        return parts[0], tuple(names)
    import datasets

    return datasets.concatenate_datasets(parts), tuple(names)


def _data_dir_files(spec: GlueSpec, data_dir: str) -> tuple[str, Optional[str]]:
    """--data-dir: DIR/train.jsonl (or .json/.csv/.tsv) and DIR/validation|dev|test.* if there is one."""
    root = Path(data_dir).expanduser()

    def first(stem: str) -> Optional[str]:
        return next((str(root / f"{stem}{s}") for s in _SUFFIXES if (root / f"{stem}{s}").is_file()), None)

    train = first("train")
    if train is None:
        raise TlabError(f"no {spec.name} data in --data-dir {root}: expected {root}/train.jsonl "
                        "(or train.csv / train.tsv / train.json)")
    return train, next(filter(None, (first(stem) for stem in _VALIDATION_NAMES)), None)


def _hub(spec: GlueSpec, cfg: RunConfig, hub: str, names: Optional[Sequence[str]]):
    """(train, validation or None, label names) of a Hub dataset, text_a/text_b/label columns; its ClassLabel
    names when it has them (IMDB: neg, pos), else discovered from the training split like a file's."""
    import datasets

    d = cfg.data
    try:
        found = datasets.load_dataset(hub, d.dataset_config)
    except Exception as e:  # offline, DNS, missing cache: all end the same way for the user
        raise TlabError(f"could not load {hub} from the Hugging Face Hub ({type(e).__name__}); give files instead "
                        "(--train-file / --validation-file, or --data-dir)") from None
    text_a, text_b = d.text_a_column or spec.hub_text[0], d.text_b_column or spec.hub_text[1]
    label = d.label_column or spec.label_column
    if "train" not in found:
        raise TlabError(f"{hub} has no train split (splits: {', '.join(found)})")
    feature = found["train"].features.get(label)
    glue_data.missing_columns(Path(hub), found["train"].features, [text_a, text_b, label])
    if names is None:
        names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else \
            discover([label_key(v, hub, i) for i, v in enumerate(found["train"][label], 1)])
    index = {n: i for i, n in enumerate(names)}

    def convert(ds, split):
        classes = ds.features[label].names if isinstance(ds.features[label], datasets.ClassLabel) else None
        keep = {text_a: "text_a", **({text_b: "text_b"} if text_b else {})}

        def rows(batch):
            keys = [(classes[v] if v >= 0 else None) if classes is not None else label_key(v, f"{hub} {split}", i)
                    for i, v in enumerate(batch[label], 1)]
            unknown = next((k for k in keys if k not in index), "")
            if unknown != "":
                raise TlabError(f"{hub} {split} holds the label {unknown!r}, not one of {', '.join(names)}")
            return {**{v: batch[k] for k, v in keep.items()}, "label": [index[k] for k in keys]}

        # shuffled (with the run's seed): Hub splits are often sorted by label (IMDB's are), and
        # data.max_train_samples / max_eval_samples keep the first rows
        ds = ds.shuffle(seed=cfg.train.seed).flatten_indices()
        return ds.map(rows, batched=True, remove_columns=ds.column_names, desc=f"reading {hub} {split}").cast_column(
            "label", datasets.Value("int64"))

    validation = convert(found["validation"], "validation") if "validation" in found else None
    return convert(found["train"], "train"), validation, tuple(names)


def load(spec: GlueSpec, cfg: RunConfig, path: str, train: bool, read=_read):
    """(spec with its label names, training set or None, {split: validation set}, notes) for `glue.prepare`:
    from --train-file / --validation-file, --data-dir, or the Hub (data.dataset; IMDB's own without either).
    `read(spec, cfg, files, names, whose) -> (dataset, names)` reads files (multi_label.read: label sets)."""
    d = cfg.data
    # tlab eval: the labels the model was trained with, from its config (a discovered set is never rediscovered)
    names = None if train else (spec.label_names or model_labels(path, cfg.model.trust_remote_code,
                                                                 cfg.classification.multi_label))
    whose = "never occurs in the training data" if train else f"is not one of the labels of the model {path}"
    train_files, validation_file = list(d.train_files), d.validation_file
    if not train_files and d.data_dir:
        train_files, found = _data_dir_files(spec, d.data_dir)
        train_files, validation_file = [train_files], validation_file or found
    hub = d.dataset or (IMDB_HUB if spec.name == "imdb" else None)
    train_ds = validation = source = None
    if train_files:
        if train or not validation_file:  # the held-out part of the training data needs the training data
            train_ds, names = read(spec, cfg, train_files, names, whose)
        if validation_file:
            validation, source = read(spec, cfg, [validation_file], names, whose)[0], validation_file
    elif validation_file and not train:
        validation, source = read(spec, cfg, [validation_file], names, whose)[0], validation_file
    elif hub:
        train_ds, validation, names = _hub(spec, cfg, hub, names)
        source = f"{hub} validation split"
        if validation_file:
            validation, source = read(spec, cfg, [validation_file], names, whose)[0], validation_file
    else:
        raise TlabError(f"--task {spec.name} needs labelled data: --train-file (CSV, TSV, JSON Lines; "
                        "--text-column, --label-column), --data-dir with train.jsonl, or data.dataset (a Hub id)")
    if train and len(names) < 2:
        raise TlabError(f"the {spec.name} training data has {len(names)} label ({', '.join(names)}): a classifier "
                        "needs examples of at least two classes")
    spec = dataclasses.replace(spec, label_names=tuple(names), raw_labels=tuple(names))
    if validation is not None:
        return spec, train_ds if train else None, {"validation": validation}, {"validation": source}
    if d.validation_fraction <= 0:
        if not train:
            raise TlabError("no validation data: the run trained on all of its data (data.validation_fraction 0); "
                            "give --validation-file")
        return spec, train_ds, {}, {"validation": "none (data.validation_fraction 0)"}
    evals, rest = glue_data.held_out_by_sentence(train_ds, d.validation_fraction, cfg.train.seed)
    note = (f"carve-out: {d.validation_fraction:g} of the training texts held out "
            f"(data.validation_fraction, seed {cfg.train.seed}), never trained on")
    return spec, rest if train else None, evals, {"validation": note}
