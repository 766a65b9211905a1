"""Parallel text for translation: line-aligned files (train.en / train.de in --data-dir, as WMT ships them),
JSON Lines `{"translation": {"en": ..., "de": ...}}`, and the Hub's wmt14 / wmt16, as one schema of
`source`, `target` and `line` (the 1-based line or record number, so predictions can be matched to the file).

Moses-tokenized files (WMT's preprocessed releases: `Parliament &apos;s`, `, with`) are detokenized and unescaped
with sacremoses before anything else, so the model is trained on, and scored against, raw text the way sacreBLEU
expects. `translation.detokenize: auto` decides from the files themselves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from tlab.errors import TlabError

# task -> (Hub dataset, its config, source language, target language)
WMT_TASKS = {
    "wmt14-en-de": ("wmt/wmt14", "de-en", "en", "de"),
    "wmt14-de-en": ("wmt/wmt14", "de-en", "de", "en"),
    "wmt16-en-ro": ("wmt/wmt16", "ro-en", "en", "ro"),
    "wmt16-ro-en": ("wmt/wmt16", "ro-en", "ro", "en"),
}
SPLIT_NAMES = {"train": ("train",), "validation": ("valid", "validation", "dev", "newstest2013")}
JSON_SUFFIXES = (".jsonl", ".json")
# XML escapes written by Moses' tokenizer (escape-special-chars), and spaces it puts before punctuation
_MOSES_ESCAPES = re.compile(r"&(apos|quot|amp|lt|gt|#124|#91|#93);")
_SPACED_PUNCT = re.compile(r"\w \.$| , \w| &apos;s ")


def languages(task: str, fixed: Optional[tuple[str, str]], source_lang: Optional[str],
              target_lang: Optional[str]) -> tuple[str, str]:
    """(source, target) language codes: a WMT task's own (`fixed`), which flags may not contradict, or the
    generic task's from the flags."""
    if fixed:
        src, tgt = fixed
        for given, own, which in ((source_lang, src, "source"), (target_lang, tgt, "target")):
            if given and given != own:
                raise TlabError(f"task {task} translates {src} -> {tgt}; --{which}-lang {given} contradicts it "
                                f"(use --task translation --source-lang .. --target-lang .. for another pair)")
        return src, tgt
    if not source_lang or not target_lang:
        raise TlabError("--task translation needs --source-lang and --target-lang (language codes, e.g. en and de, "
                        "as in the file names train.en / train.de)")
    if source_lang == target_lang:
        raise TlabError(f"--source-lang and --target-lang are both {source_lang!r}")
    return source_lang, target_lang


# -- files -----------------------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise TlabError(f"translation file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TlabError(f"{path} is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    if not lines:
        raise TlabError(f"translation file {path} is empty")
    return [line.rstrip("\r") for line in lines]


def read_line_pair(source: Path, target: Path) -> list[dict]:
    """Two line-aligned files -> rows; files of different lengths are refused (a shifted line ruins every pair)."""
    src, tgt = _read_lines(source), _read_lines(target)
    if len(src) != len(tgt):
        raise TlabError(f"{source} has {len(src):,} lines but {target} has {len(tgt):,}: line-aligned parallel files "
                        "need one line per sentence on both sides")
    return [{"source": s, "target": t, "line": n} for n, (s, t) in enumerate(zip(src, tgt), 1)]


def read_jsonl(path: Path, src: str, tgt: str) -> list[dict]:
    """`{"translation": {"en": ..., "de": ...}}` per line (the Hub's schema), or a JSON list of such records."""
    if not path.is_file():
        raise TlabError(f"translation file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else None
    except json.JSONDecodeError:
        records = None
    if records is None:
        records = []
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TlabError(f"{path} line {number} is not valid JSON ({e.msg})") from None
    rows = []
    for number, record in enumerate(records, 1):
        pair = record.get("translation", record) if isinstance(record, dict) else None
        if not isinstance(pair, dict) or not isinstance(pair.get(src), str) or not isinstance(pair.get(tgt), str):
            have = ", ".join(map(str, pair)) if isinstance(pair, dict) else type(record).__name__
            raise TlabError(f"{path} record {number} needs string fields {src!r} and {tgt!r} under \"translation\" "
                            f"(it has: {have})")
        rows.append({"source": pair[src], "target": pair[tgt], "line": number})
    if not rows:
        raise TlabError(f"translation file {path} holds no records")
    return rows


def find_split(data_dir: Path, split: str, src: str, tgt: str) -> Optional[tuple[Path, Path]]:
    """DIR/train.en + DIR/train.de (or valid/validation/dev/newstest2013 for validation)."""
    for name in SPLIT_NAMES[split]:
        pair = data_dir / f"{name}.{src}", data_dir / f"{name}.{tgt}"
        if pair[0].is_file() or pair[1].is_file():
            return pair
    return None


def read_files(files: list[str], src: str, tgt: str) -> list[dict]:
    """--train-file / --validation-file: JSON Lines, a pair of files train.en + train.de, or a prefix (train)."""
    paths = [Path(f).expanduser() for f in files]
    if len(paths) == 1 and paths[0].suffix in JSON_SUFFIXES:
        return read_jsonl(paths[0], src, tgt)
    if len(paths) == 1 and not paths[0].is_file():  # a prefix: PREFIX.en + PREFIX.de
        return read_line_pair(paths[0].with_name(f"{paths[0].name}.{src}"), paths[0].with_name(f"{paths[0].name}.{tgt}"))
    by_lang = {p.suffix.lstrip("."): p for p in paths}
    if len(paths) == 2 and src in by_lang and tgt in by_lang:
        return read_line_pair(by_lang[src], by_lang[tgt])
    raise TlabError(f"cannot read {', '.join(files)} as {src}-{tgt} parallel data: give a .jsonl file, the two files "
                    f"NAME.{src} and NAME.{tgt}, or their common prefix NAME")


# -- Moses detokenization ----------------------------------------------------------------------------------------
def looks_moses_tokenized(lines: list[str]) -> bool:
    """WMT's preprocessed files carry XML escapes and spaces before punctuation; raw text has neither."""
    sample = lines[:2000]
    escaped = sum(bool(_MOSES_ESCAPES.search(s)) for s in sample)
    spaced = sum(bool(_SPACED_PUNCT.search(s)) for s in sample)
    return escaped > 0 or spaced > 0.2 * max(1, len(sample))


def detokenizer(lang: str):
    from sacremoses import MosesDetokenizer

    moses = MosesDetokenizer(lang=lang)
    return lambda line: moses.detokenize(line.split(), unescape=True)


def detokenize_rows(rows: list[dict], src: str, tgt: str) -> list[dict]:
    source, target = detokenizer(src), detokenizer(tgt)
    return [{**row, "source": source(row["source"]), "target": target(row["target"])} for row in rows]


# -- assembling -------------------------------------------------------------------------------------------------
def _drop_empty(rows: list[dict], where: str) -> tuple[list[dict], Optional[str]]:
    """Training pairs with an empty side teach nothing but to stop: dropped, and said."""
    kept = [r for r in rows if r["source"].strip() and r["target"].strip()]
    if len(kept) == len(rows):
        return rows, None
    first = next(r["line"] for r in rows if not (r["source"].strip() and r["target"].strip()))
    return kept, f"skipped {len(rows) - len(kept)} training pair(s) of {where} with an empty side (first: line {first})"


def _refuse_empty(rows: list[dict], where: str) -> None:
    """Validation scores must cover the whole file, so an empty line is an error there, not a skip."""
    for r in rows:
        if not r["source"].strip() or not r["target"].strip():
            side = "source" if not r["source"].strip() else "target"
            raise TlabError(f"{where} line {r['line']} has an empty {side} sentence: validation pairs need text on "
                            "both sides (remove the line from both files)")


def _dataset(rows: list[dict]):
    import datasets

    text = datasets.Value("string")
    return datasets.Dataset.from_list(rows, features=datasets.Features({"source": text, "target": text,
                                                                         "line": datasets.Value("int32")}))


def load_hub(hub: Optional[tuple[str, str]], split: str, src: str, tgt: str):
    """A split of a Hub translation dataset, `hub` = (dataset id, config); None: the task has none."""
    import datasets

    if not hub:
        raise TlabError("--task translation reads local files: give --data-dir (train.xx/valid.xx) or --train-file")
    name, config = hub
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, DNS, missing cache: all end the same way for the user
        raise TlabError(f"could not load {name} ({config}) from the Hugging Face Hub ({type(e).__name__}); offline, "
                        f"pass --data-dir with train.{src}/train.{tgt}/valid.{src}/valid.{tgt}") from None
    return [{"source": p[src], "target": p[tgt], "line": n} for n, p in enumerate(ds["translation"], 1)]


def load(cfg, src: str, tgt: str, train: bool, log, hub: Optional[tuple[str, str]] = None) -> tuple:
    """(training Dataset or None, validation Dataset, notes): from --train-file/--validation-file, --data-dir, or
    the Hub; detokenized when the files are Moses-tokenized (translation.detokenize auto|moses|none)."""
    d, t = cfg.data, cfg.translation
    sources: dict[str, tuple] = {}
    if d.data_dir:
        root = Path(d.data_dir).expanduser()
        if not root.is_dir():
            raise TlabError(f"--data-dir {d.data_dir} is not a folder")
        for split in ("train", "validation"):
            pair = find_split(root, split, src, tgt)
            if pair is not None:
                sources[split] = ("pair", pair)
        if "train" not in sources and train and not d.train_files:
            raise TlabError(f"{root} holds no train.{src} + train.{tgt}")
        if "validation" not in sources and not d.validation_file:
            raise TlabError(f"{root} holds no valid.{src} + valid.{tgt} (or validation./dev.)")
    if d.train_files:
        sources["train"] = ("files", d.train_files)
    if d.validation_file:
        sources["validation"] = ("files", [d.validation_file])

    def rows_of(split: str) -> tuple[list[dict], str]:
        if split in sources:
            kind, where = sources[split]
            if kind == "pair":
                return read_line_pair(*where), f"{where[0]} + {where[1]}"
            return read_files(list(where), src, tgt), ", ".join(where)
        return load_hub(hub, split, src, tgt), f"{hub[0] if hub else 'the Hub'} {split}"

    notes: dict = {}
    splits = {"validation": rows_of("validation")}
    if train:
        splits["train"] = rows_of("train")
    mode = t.detokenize
    if mode == "auto":
        sample = [r["source"] for r in splits["validation"][0][:1000]] + [r["target"] for r in splits["validation"][0][:1000]]
        if train:
            sample += [r["source"] for r in splits["train"][0][:1000]]
        mode = "moses" if looks_moses_tokenized(sample) else "none"
    notes["detokenized"] = mode
    if mode == "moses":
        log(f"the data is Moses-tokenized: detokenizing and unescaping it (sacremoses, {src} and {tgt}) for training "
            "and scoring")
    out = {}
    for split, (rows, where) in splits.items():
        if mode == "moses":
            rows = detokenize_rows(rows, src, tgt)
        if split == "train":
            rows, said = _drop_empty(rows, where)
            if said:
                log(said)
            notes["skipped_empty_pairs"] = len(splits["train"][0]) - len(rows)
            if not rows:
                raise TlabError(f"{where} holds no pair with text on both sides")
        else:
            _refuse_empty(rows, where)
        out[split] = rows
    if d.max_train_samples and "train" in out:
        out["train"] = out["train"][: d.max_train_samples]
    if d.max_eval_samples:
        out["validation"] = out["validation"][: d.max_eval_samples]
    return (_dataset(out["train"]) if "train" in out else None), _dataset(out["validation"]), notes
