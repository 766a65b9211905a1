"""Word labels on sub-tokens and sentences longer than a window, for token classification: labels aligned
through the fast tokenizer's word_ids(), overlapping windows, and the merge that reads each word back from the
window where it has the most context."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

IGNORE = -100  # the label the loss skips (special tokens, non-first sub-tokens)


def align_labels(word_ids: Sequence[Optional[int]], word_labels: Sequence[int], label_all_subtokens: bool = False,
                 inside: Optional[dict[int, int]] = None) -> list[int]:
    """Token labels from word labels: a word's first sub-token gets its label, the others -100 (with
    `label_all_subtokens` they get it too, B-X becoming I-X through `inside`); special tokens (None) -100."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(word_labels[word])
        elif label_all_subtokens:
            label = word_labels[word]
            labels.append((inside or {}).get(label, label))
        else:
            labels.append(IGNORE)
        previous = word
    return labels


def inside_of(label2id: dict[str, int]) -> dict[int, int]:
    """B-X's id -> I-X's id."""
    return {i: label2id[f"I-{name[2:]}"] for name, i in label2id.items() if name.startswith("B-") and f"I-{name[2:]}" in label2id}


def first_pieces(words: Sequence[int]) -> Iterable[tuple[int, int, int]]:
    """(position, word, centrality) for the first sub-token of each word in one window (words: -1 = special
    token); centrality = tokens to the nearer edge of the window's text, the context the word has on its poorer side."""
    content = [t for t, w in enumerate(words) if w >= 0]
    if not content:
        return
    first, last = content[0], content[-1]
    for t in content:
        if t == first or words[t - 1] != words[t]:
            yield t, words[t], min(t - first, last - t)


class WindowMerge:
    """Per (sentence, word), the value read at the word's first sub-token in the window where that token is most
    central; an earlier window wins a tie. Every word with any sub-token is covered by some window, so no entity
    is lost at a window border."""

    def __init__(self):
        self.best: dict[int, dict[int, tuple[int, Any]]] = {}

    def add(self, sentence: int, words: Sequence[int], values: Sequence[Any]) -> None:
        found = self.best.setdefault(sentence, {})
        for t, word, centrality in first_pieces(words):
            if word not in found or centrality > found[word][0]:
                found[word] = (centrality, values[t])

    def words(self, sentence: int, n: int, default: Any) -> list[Any]:
        found = self.best.get(sentence, {})
        return [found[w][1] if w in found else default for w in range(n)]


def tokenize(rows: dict, tokenizer, label2id: dict[str, int], max_length: int, stride: int, label_all: bool):
    """Sentences -> windows (input_ids, labels, the sentence number, each token's word index or -1, length). A
    sentence longer than `max_length` tokens gives several windows sharing `stride` tokens, each labelled on its
    own (a window that opens inside a word labels that word's remaining pieces as if they began it; for scoring
    the word is read in a window holding its first piece, see `WindowMerge`)."""
    import datasets

    ds = datasets.Dataset.from_dict({"tokens": rows["tokens"], "tags": rows["tags"],
                                     "sentence": list(range(len(rows["tokens"])))})
    inside = inside_of(label2id)

    def encode(batch):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length,
                        stride=stride, return_overflowing_tokens=True)
        sample = enc.pop("overflow_to_sample_mapping")
        labels, words, sentence = [], [], []
        for i, s in enumerate(sample):
            ids = enc.word_ids(i)
            labels.append(align_labels(ids, [label2id[t] for t in batch["tags"][s]], label_all, inside))
            words.append([-1 if w is None else w for w in ids])
            sentence.append(batch["sentence"][s])
        enc["labels"], enc["words"], enc["sentence"] = labels, words, sentence
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="windows")
