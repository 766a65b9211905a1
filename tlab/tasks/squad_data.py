"""SQuAD data: the official nested JSON (v1.1, v2.0), flat JSON Lines and the Hub copies as one schema, and
splits by article. Windows, collation and post-processing, which know nothing of file formats, are in
tlab/tasks/extractive_qa.py.

Rows follow the Hub's `rajpurkar/squad` schema: id, title, context, question, answers {text: [...],
answer_start: [...]}; an unanswerable (v2) question has empty answer lists.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from tlab.errors import TlabError

HUB_IDS = {False: "rajpurkar/squad", True: "rajpurkar/squad_v2"}  # by version_2
COLUMNS = ("id", "title", "context", "question", "answers")


def features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({"id": text, "title": text, "context": text, "question": text,
                              "answers": datasets.Sequence({"text": text, "answer_start": datasets.Value("int32")})})


# -- loading ---------------------------------------------------------------------------------------------------
def _read_json(path: Path):
    """A .json document, or the list of records of a JSON Lines file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TlabError(f"{path} is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    if not text.strip():
        raise TlabError(f"{path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass  # JSON Lines, or broken JSON: the line reader says where
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise TlabError(f"{path} line {lineno} is not valid JSON ({e.msg})") from None
    return records


def _get(record, key: str, where: str):
    if not isinstance(record, dict) or key not in record:
        have = ", ".join(map(repr, record)) if isinstance(record, dict) else type(record).__name__
        raise TlabError(f"{where} lacks {key!r} (it has: {have})")
    return record[key]


def _nested_rows(doc: dict, path: Path) -> Iterator[dict]:
    for a, article in enumerate(_get(doc, "data", str(path))):
        for p, paragraph in enumerate(_get(article, "paragraphs", f"{path} article {a}")):
            where = f"{path} article {a} paragraph {p}"
            context = _get(paragraph, "context", where)
            for qa in _get(paragraph, "qas", where):
                # v2 keeps "plausible_answers" beside an empty "answers" for impossible questions: never train on them.
                answers = [] if qa.get("is_impossible") else _get(qa, "answers", f"{where} question {qa.get('id')}")
                yield {"id": str(_get(qa, "id", where)), "title": article.get("title", ""), "context": context,
                       "question": _get(qa, "question", where),
                       "answers": {"text": [_get(x, "text", where) for x in answers],
                                   "answer_start": [_get(x, "answer_start", where) for x in answers]}}


def _flat_row(record, where: str) -> dict:
    answers = _get(record, "answers", where)
    return {"id": str(_get(record, "id", where)), "title": record.get("title") or "",
            "context": _get(record, "context", where), "question": _get(record, "question", where),
            "answers": {"text": _get(answers, "text", f"{where} answers"),
                        "answer_start": _get(answers, "answer_start", f"{where} answers")}}


def load_squad_file(path: str | Path, version_2: Optional[bool] = None):
    """A SQuAD file as a Dataset: the official nested .json, or flat records (.jsonl, or a .json list).

    version_2 False/True checks the file fits a v1.1/v2.0 task (None: no check)."""
    from tlab.data import on_disk

    path = Path(path).expanduser()
    if not path.is_file():
        raise TlabError(f"SQuAD file {path} does not exist")
    return on_disk(lambda: _load(path, version_2), path, key=f"squad-{version_2}")


def _load(path: Path, version_2: Optional[bool]):
    import datasets

    doc = _read_json(path)
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, list) and any(isinstance(a, dict) and "paragraphs" in a for a in data):
        rows = list(_nested_rows(doc, path))
    elif isinstance(doc, (dict, list)):
        # {"data": [records]} is how datasets exports JSON; a lone dict is a JSON Lines file of one record.
        records = data if isinstance(data, list) else [doc] if isinstance(doc, dict) else doc
        rows = [_flat_row(record, f"{path} record {n}") for n, record in enumerate(records, 1)]
    else:
        raise TlabError(f"{path} is neither SQuAD JSON ({{'data': [{{'paragraphs': ...}}]}}) nor JSON Lines records")
    if not rows:
        raise TlabError(f"{path} holds no questions")
    unanswerable = sum(not row["answers"]["text"] for row in rows)
    if version_2 is False and unanswerable:
        raise TlabError(f"{path} has {unanswerable} question(s) without answers (SQuAD v2.0 data); "
                        "use the squad_v2 task")
    if version_2 and not unanswerable:
        raise TlabError(f"{path} has no unanswerable questions (SQuAD v1.1 data); use the squad task")
    return datasets.Dataset.from_list(rows, features=features())


def load_squad_hub(version_2: bool, split: str):
    """One split of rajpurkar/squad or rajpurkar/squad_v2 (needs the Hub or a filled cache)."""
    import datasets

    name = HUB_IDS[version_2]
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, DNS, missing cache: all end the same way for the user
        raise TlabError(f"could not load {name} from the Hugging Face Hub ({type(e).__name__}); offline, pass "
                        "--train-file/--validation-file with SQuAD JSON or JSON Lines") from None
    return ds.select_columns(list(COLUMNS)).cast(features())


def drop_misaligned(ds):
    """(rows whose first answer is where answer_start says, number dropped): training points at that answer."""
    def aligned(batch):
        return [not a["text"] or c[a["answer_start"][0]:a["answer_start"][0] + len(a["text"][0])] == a["text"][0]
                for c, a in zip(batch["context"], batch["answers"])]

    kept = ds.filter(aligned, batched=True)
    return kept, len(ds) - len(kept)


def split_by_article(ds, fraction: float, seed: int):
    """(train, validation), whole articles in each (questions of one paragraph share its text), validation with
    about `fraction` of the questions. The draw depends only on seed and the set of titles, not on row order;
    untitled rows are grouped by context."""
    if not 0 < fraction < 1:
        raise TlabError(f"validation fraction must be between 0 and 1, got {fraction}")
    keys = [title or context for title, context in zip(ds["title"], ds["context"])]
    counts = Counter(keys)
    if len(counts) < 2:
        raise TlabError("cannot split by article: every question belongs to one article")
    titles = sorted(counts)
    chosen, n = set(), 0
    for i in np.random.default_rng(seed).permutation(len(titles))[:-1]:  # at least one article stays for training
        if n >= fraction * len(keys):
            break
        chosen.add(titles[i])
        n += counts[titles[i]]
    part = [k in chosen for k in keys]
    return (ds.select([i for i, v in enumerate(part) if not v]), ds.select([i for i, v in enumerate(part) if v]))
