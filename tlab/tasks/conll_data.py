"""Named-entity data: CoNLL-format column files and JSON Lines read as sentences of (tokens, tags), tag schemes
detected (IOB1, IOB2, IOBES, BILOU) and converted to IOB2, and CoNLL-2003's own table (files, Hub id, labels).

CoNLL-2003's English files tag in IOB1: an entity starts with I-, and B- appears only where an entity directly
follows another of the same type. Everything the family trains on and scores is IOB2 (every entity starts with
B-), read the way seqeval's default (conlleval) mode reads a sequence: an I-X that does not continue an X entity
starts a new one. Such tags are counted as `inconsistent` (for IOB1, a B-X that does not follow an X entity too).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tlab.config import NER_SCHEMES
from tlab.errors import TlabError

HUB_ID = "eriktks/conll2003"
# CoNLL-2003's label order, as the Hub dataset's ClassLabel names it
CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL2003_FILES = {"train": "eng.train", "validation": "eng.testa", "test": "eng.testb"}
# `tlab eval --split`: a split by the Hub's name or its file's (eng.testa is the validation split, eng.testb the test)
CONLL2003_SPLITS = {"train": "train", "validation": "validation", "testa": "validation", "test": "test", "testb": "test"}
SCHEMES = NER_SCHEMES
PREFIXES = {"B", "I", "E", "S", "L", "U"}
JSON_SUFFIXES = (".jsonl", ".json")


@dataclass
class Sentences:
    """Sentences of one source, tags as read (before conversion)."""

    tokens: list[list[str]]
    tags: list[list[str]]
    source: str


@dataclass
class Converted:
    """IOB2 tags, the scheme they were read in, and how many tags seqeval had to reinterpret."""

    tags: list[list[str]]
    scheme: str
    inconsistent: int = 0
    examples: list[str] = field(default_factory=list)  # a few "file: sentence N: I-PER after B-LOC"


# -- reading ---------------------------------------------------------------------------------------------------
def read_file(path: str, tag_column: Optional[str] = None) -> Sentences:
    """A CoNLL column file or JSON Lines ({"tokens": [...], "ner_tags": [...]}, string tags), by suffix or by a
    first character `{`."""
    p = Path(path)
    if not p.is_file():
        raise TlabError(f"NER data file not found: {path}")
    text = p.read_text(encoding="utf-8", errors="strict") if p.stat().st_size else ""
    if not text.strip():
        raise TlabError(f"NER data file {path} is empty")
    if p.suffix in JSON_SUFFIXES or text.lstrip().startswith("{"):
        found = _read_jsonl(text, path)
    else:
        found = _read_columns(text, path, tag_column)
    if not found.tokens:
        raise TlabError(f"NER data file {path} holds no sentences")
    return found


def _column_index(tag_column: Optional[str], path: str) -> Optional[int]:
    if tag_column is None or tag_column == "":
        return None
    try:
        index = int(tag_column)
    except ValueError:
        index = 0
    if index != 0:
        return index
    else:
        raise TlabError(f"data.label_column for a CoNLL file is a column index (0 = the token; -1 = the last), got "
                        f"{tag_column!r} ({path})") from None


def _read_columns(text: str, path: str, tag_column: Optional[str]) -> Sentences:
    """Whitespace columns, the token first, the tag in `tag_column` (an index) or the last column; -DOCSTART-
    lines skipped; blank lines end sentences."""
    index = _column_index(tag_column, path)
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                tokens.append(words)
                tags.append(labels)
                words, labels = [], []
            continue
        wanted = (index if index >= 0 else len(parts) + index) if index is not None else len(parts) - 1
        if len(parts) < 2 or not 0 < wanted < len(parts):
            needed = 2 if index is None else (index + 1 if index >= 0 else 1 - index)
            raise TlabError(f"{path}:{number}: {len(parts)} column(s), need at least {max(2, needed)} (token ... tag): "
                            f"{line.strip()[:80]!r}")
        labels.append(parts[wanted])
        words.append(parts[0])
    if words:
        tokens.append(words)
        tags.append(labels)
    return Sentences(tokens, tags, path)


def _read_jsonl(text: str, path: str) -> Sentences:
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise TlabError(f"{path}:{number}: not JSON (one {{\"tokens\": [...], \"ner_tags\": [...]}} per line)") from None
        if not isinstance(row, dict) or not isinstance(row.get("tokens"), list) or not isinstance(row.get("ner_tags"), list):
            raise TlabError(f"{path}:{number}: needs lists \"tokens\" and \"ner_tags\"")
        words, labels = row["tokens"], row["ner_tags"]
        if not all(isinstance(t, str) for t in words) or not all(isinstance(t, str) for t in labels):
            raise TlabError(f"{path}:{number}: \"tokens\" and \"ner_tags\" must hold strings (tags as names, e.g. B-PER)")
        if len(words) != len(labels):
            raise TlabError(f"{path}:{number}: {len(words)} tokens but {len(labels)} tags")
        if words:
            tokens.append(words)
            tags.append(labels)
    return Sentences(tokens, tags, path)


def load_hub(split: str) -> Sentences:
    """CoNLL-2003 from the Hub (eriktks/conll2003, already IOB2), tags as names. Needs the network."""
    import datasets

    hub_split = {"validation": "validation", "test": "test"}.get(split, "train")
    try:
        ds = datasets.load_dataset(HUB_ID, split=hub_split)
    except Exception as exc:
        raise TlabError(f"could not load {HUB_ID} from the Hub ({str(exc).splitlines()[0][:160]}); offline, pass "
                        f"--data-dir with {', '.join(CONLL2003_FILES.values())}") from None
    names = ds.features["ner_tags"].feature.names
    return Sentences([list(t) for t in ds["tokens"]], [[names[i] for i in row] for row in ds["ner_tags"]], f"{HUB_ID}:{hub_split}")


def conll2003_file(data_dir: str, split: str) -> str:
    path = Path(data_dir) / CONLL2003_FILES[split]
    if not path.is_file():
        raise TlabError(f"{path} not found: --data-dir must hold {', '.join(CONLL2003_FILES.values())}")
    return str(path)


# -- tag schemes -----------------------------------------------------------------------------------------------
def split_tag(tag: str, where: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''). An unknown prefix or a tag without a type is refused."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep:  # also PER-B style (suffix schemes) is not read
        prefix, sep, kind = tag.partition("_")
    if not sep or prefix not in PREFIXES or not kind:
        raise TlabError(f"{where}: unknown tag {tag!r} (tags are O or B-/I-/E-/S-/L-/U- followed by a type, e.g. B-PER)")
    return prefix, kind


def detect_scheme(tags: Sequence[Sequence[str]], where: str) -> str:
    """IOBES (E-/S- seen), BILOU (L-/U- seen), else IOB1 when more entities open with I- than with a B- that
    follows no entity of its type (CoNLL-2003's files), else IOB2."""
    prefixes: set[str] = set()
    i_starts = b_starts = 0
    for row in tags:
        previous = ""
        for tag in row:
            prefix, kind = split_tag(tag, where)
            prefixes.add(prefix)
            if prefix == "I" and previous != kind:
                i_starts += 1
            elif prefix == "B" and previous != kind:
                b_starts += 1
            previous = kind
    if prefixes & {"E", "S"}:
        if prefixes & {"L", "U"}:
            raise TlabError(f"{where}: tags mix IOBES (E-, S-) and BILOU (L-, U-) prefixes")
        return "IOBES"
    if prefixes & {"L", "U"}:
        return "BILOU"
    return "IOB1" if i_starts > b_starts else "IOB2"


def to_iob2(tags: Sequence[Sequence[str]], scheme: str, where: str) -> Converted:
    """Tags in `scheme` -> IOB2, read as seqeval's default mode reads them: an I- (E-, L-) tag that continues no
    entity of its type starts one (B-). Counted as inconsistent: such tags (not in IOB1, where that is how entities
    start), and, in IOB1, a B-X that follows no X entity."""
    out = Converted([], scheme)
    for number, row in enumerate(tags, 1):
        converted: list[str] = []
        previous = ""  # type of the entity the last tag belongs to ('' after O)
        for tag in row:
            prefix, kind = split_tag(tag, where)
            if prefix == "O":
                converted.append("O")
                previous = ""
                continue
            if prefix in ("S", "U"):
                prefix = "B"
            elif prefix in ("E", "L"):
                prefix = "I"
            bad = None
            if prefix == "I" and previous != kind:
                if scheme != "IOB1":
                    bad = f"I-{kind} after {'O' if not previous else previous + ' entity'}"
                prefix = "B"
            elif prefix == "B" and scheme == "IOB1" and previous != kind:
                bad = f"B-{kind} (IOB1 uses B- only right after another {kind} entity)"
            if bad:
                out.inconsistent += 1
                if len(out.examples) < 3:
                    out.examples.append(f"{where}: sentence {number}: {bad}")
            converted.append(f"{prefix}-{kind}")
            previous = kind
        out.tags.append(converted)
    return out


def convert(sentences: Sentences, scheme: str = "auto") -> Converted:
    detected = detect_scheme(sentences.tags, sentences.source) if scheme == "auto" else scheme
    return to_iob2(sentences.tags, detected, sentences.source)


def entity_types(tags: Sequence[Sequence[str]]) -> list[str]:
    return sorted({t[2:] for row in tags for t in row if t != "O"})


def labels_for(types: Sequence[str]) -> list[str]:
    """O, then B-/I- per type: the model's label list (both prefixes of every type, so sub-token labels and
    predictions may use either)."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def held_out(tokens: Sequence[Sequence[str]], fraction: float, seed: int) -> list[bool]:
    """Which sentences to hold out for validation: a hash of the sentence's text and the seed, so that `tlab eval`
    with the same files and seed finds the same ones (a repeated sentence is never on both sides)."""

    def held(words) -> bool:
        digest = hashlib.sha1(f"{seed}:{' '.join(words)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    return [held(w) for w in tokens]
