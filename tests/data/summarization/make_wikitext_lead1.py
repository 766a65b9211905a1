"""Builds wikitext-lead1.jsonl from WikiText-2's validation and test files (CC BY-SA 3.0): each kept paragraph's
first sentences are the document and its first sentence is the "summary" (the lead-1 baseline of news
summarization). Run from the repository root:
    python tests/data/summarization/make_wikitext_lead1.py ../shared/data/corpus/wikitext-2/{valid,test}.txt"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import punkt
from sacremoses import MosesDetokenizer

OUT = Path(__file__).with_name("wikitext-lead1.jsonl")
JOINED = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}  # WikiText's split hyphens and number separators


def main(sources: list[str], wanted: int = 280) -> None:
    detok = MosesDetokenizer(lang="en")
    rows = []
    lines = [line for source in sources for line in Path(source).read_text(encoding="utf-8").split("\n")]
    for line in lines:
        text = line.strip()
        if not text or text.startswith("="):
            continue  # headings, blank lines
        for tokenized, plain in JOINED.items():
            text = text.replace(tokenized, plain)
        text = detok.detokenize(text.split())
        sentences = punkt.sent_tokenize(text)
        if len(sentences) < 2 or not 6 <= len(sentences[0].split()) <= 35:
            continue
        document = sentences[:2]
        for sentence in sentences[2:]:  # whole sentences up to about 90 words
            if len(" ".join(document + [sentence]).split()) > 90:
                break
            document.append(sentence)
        if "<unk>" not in " ".join(document):  # WikiText's unknown-word token
            rows.append({"id": f"wt2-valid-{len(rows) + 1}", "text": " ".join(document), "summary": sentences[0]})
        if len(rows) == wanted:
            break
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    OUT.write_text(text, encoding="utf-8")
    print(f"{len(rows)} documents -> {OUT} ({len(text.encode()):,} bytes)")
    assert not re.search(r"@[-,.]@", text)


if __name__ == "__main__":
    main(sys.argv[1:])
