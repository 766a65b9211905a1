"""Tokenizer training, packing, masking and batching on real text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tlab import data, modeling


@pytest.fixture(scope="module")
def corpus(shakespeare):
    return data.load_corpus(data.expand_files([str(shakespeare)]), "text")


@pytest.fixture(scope="module")
def wordpiece(corpus):
    return modeling.train_tokenizer(lambda: iter(corpus["text"]), "mlm", 1000, corpus._fingerprint)


def test_wordpiece_tokenizer_for_mlm(wordpiece):
    tok = wordpiece
    assert 900 <= len(tok) <= 1000
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert token in tok.get_vocab()
    ids = tok("First Citizen: we are accounted poor citizens.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids
    decoded = tok.decode(ids, skip_special_tokens=True)  # lower-cased; spacing around punctuation may differ
    assert decoded.replace(" ", "") == "firstcitizen:weareaccountedpoorcitizens."
    assert (tok.mask_token, tok.pad_token, tok.cls_token, tok.sep_token) == ("[MASK]", "[PAD]", "[CLS]", "[SEP]")
    assert tok.convert_tokens_to_ids("[MASK]") == tok.mask_token_id


def test_wordpiece_round_trips_unseen_text(corpus):
    # Trained on the first lines, it must encode later, unseen lines without [UNK] and decode them back to themselves
    # up to case and spacing (BERT's normalizer lower-cases; the decoder puts spaces around punctuation).
    texts = corpus["text"]
    tok = modeling.train_tokenizer(lambda: iter(texts[:3000]), "mlm", 1000, "first-3000-lines")
    unseen = texts[-500:]
    ids = tok(unseen, add_special_tokens=False)["input_ids"]
    same = sum(tok.decode(row).replace(" ", "") == line.lower().replace(" ", "") for row, line in zip(ids, unseen))
    unknown = sum(row.count(tok.unk_token_id) for row in ids) / sum(map(len, ids))
    assert same / len(unseen) > 0.95 and unknown < 0.01, (same / len(unseen), unknown)


def test_bpe_tokenizer_for_clm_round_trips(corpus):
    tok = modeling.train_tokenizer(lambda: iter(corpus["text"]), "clm", 800, corpus._fingerprint)
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id is not None
    text = "Before we proceed any further, hear me speak."
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: lossless, any text


def test_bpe_training_is_reproducible(corpus):
    # Distinct cache keys make each call train anew; the same text must give the same token ids, or a run cannot be
    # reproduced on another machine or with an empty cache.
    texts = corpus["text"][:2000]
    vocabs = [modeling.train_tokenizer(lambda: iter(texts), "clm", 1000, f"reproducible-{i}").get_vocab() for i in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]


def test_wordpiece_training_is_reproducible(corpus):
    # tokenizers' WordPiece trainer alone numbers its '##x' tokens in hash order and breaks ties between equally
    # frequent merges by id: 40 plain trainings of these 2,000 lines shared only 988-1,000 of their 1,000 tokens.
    # With the alphabet listed up front every training gives the same ids (distinct cache keys train anew).
    texts = corpus["text"][:2000]
    tokenizers = [modeling.train_tokenizer(lambda: iter(texts), "mlm", 1000, f"wordpiece-{i}") for i in range(4)]
    vocabs = [t.get_vocab() for t in tokenizers]
    assert len(vocabs[0]) == 1000 and all(v == vocabs[0] for v in vocabs[1:])
    assert [vocabs[0][t] for t in modeling.BERT_SPECIALS] == [0, 1, 2, 3, 4]
    # the alphabet handed to the trainer stays plain vocabulary: only the five specials are special tokens
    assert sorted(tokenizers[0].all_special_tokens) == sorted(modeling.BERT_SPECIALS)
    assert tokenizers[0].tokenize("##e thee") == ["[UNK]", "[UNK]", "e", "thee"]  # '#' is not in Shakespeare's text


def test_tokenizer_is_cached(corpus, wordpiece):
    again = modeling.train_tokenizer(lambda: iter(["something else entirely"]), "mlm", 1000, corpus._fingerprint)
    assert again.get_vocab() == wordpiece.get_vocab()


def test_packing_keeps_every_token_in_order(corpus, wordpiece):
    tokenized = data.tokenize_corpus(corpus, wordpiece, add_special_tokens=True, append_eos=False, num_proc=1)
    every = np.concatenate([np.asarray(ids) for ids in tokenized["input_ids"]])
    for block in (64, 100, 128):
        blocks = data.pack(tokenized, block)
        assert blocks.shape == (len(every) // block, block)
        assert np.array_equal(blocks.reshape(-1), every[: blocks.size])  # only the last partial block is dropped
        assert len(every) - blocks.size < block


def test_packed_blocks_are_cached_and_memory_mapped(corpus, wordpiece):
    tokenized = data.tokenize_corpus(corpus, wordpiece, add_special_tokens=True, append_eos=False, num_proc=1)
    first = data.packed_blocks(tokenized, 64)
    second = data.packed_blocks(tokenized, 64)
    assert isinstance(second, np.memmap) and np.array_equal(first, second)
    assert data.Blocks(second)[3].dtype == torch.int64


def test_masking_rates(corpus, wordpiece):
    tok = wordpiece
    tokenized = data.tokenize_corpus(corpus, tok, add_special_tokens=True, append_eos=False, num_proc=1)
    blocks = data.Blocks(data.pack(tokenized, 128))
    collate = data.LMCollator(tok, mlm=True, mlm_probability=0.15)
    torch.manual_seed(0)
    counts = dict(candidates=0, chosen=0, masked=0, replaced=0, kept=0)
    for _ in range(5):  # five maskings of every block: ~150k candidate tokens
        originals = torch.stack([blocks[i] for i in range(len(blocks))])  # (N, 128)
        batch = collate([blocks[i] for i in range(len(blocks))])
        special = torch.isin(originals, torch.tensor(tok.all_special_ids))
        assert special.any(), "packed MLM blocks hold [CLS]/[SEP]"
        chosen = batch["labels"] != -100
        assert not chosen[special].any(), "special tokens must never be masked"
        assert torch.equal(batch["labels"][chosen], originals[chosen])  # labels are the original tokens
        assert torch.equal(batch["input_ids"][~chosen], originals[~chosen])  # the rest is untouched
        masked = (batch["input_ids"] == tok.mask_token_id) & chosen
        kept = (batch["input_ids"] == originals) & chosen
        counts["candidates"] += int((~special).sum())
        counts["chosen"] += int(chosen.sum())
        counts["masked"] += int(masked.sum())
        counts["kept"] += int(kept.sum())
        counts["replaced"] += int((chosen & ~masked & ~kept).sum())
    assert counts["candidates"] > 100_000
    # Binomial standard deviations: 0.09% for the 15%, 0.27% for the 80%, 0.2% for the 10% shares; the
    # tolerances are > 5 of them. (A random replacement that happens to draw the original token counts as kept.)
    assert counts["chosen"] / counts["candidates"] == pytest.approx(0.15, abs=0.005)
    assert counts["masked"] / counts["chosen"] == pytest.approx(0.8, abs=0.015)
    assert counts["replaced"] / counts["chosen"] == pytest.approx(0.1, abs=0.012)
    assert counts["kept"] / counts["chosen"] == pytest.approx(0.1, abs=0.012)


def test_clm_labels_are_the_inputs(corpus, wordpiece):
    blocks = [torch.arange(10), torch.arange(10, 20)]
    batch = data.LMCollator(wordpiece, mlm=False)(blocks)
    assert torch.equal(batch["labels"], batch["input_ids"]) and batch["input_ids"].shape == (2, 10)


def test_epoch_batches_deterministic_and_complete():
    sampler = data.EpochBatches(103, 8, seed=5)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(103)) and len(first) == len(sampler) == 13
    assert list(sampler) == first  # same (seed, epoch): same order, so a resumed run sees the same batches
    sampler.set_epoch(1)
    assert list(sampler) != first
    other = data.EpochBatches(103, 8, seed=6)
    assert list(other) != first


def test_length_grouping_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=2000)

    def padded(sampler):
        return sum(len(b) * max(lengths[i] for i in b) for b in sampler)

    random_batches = data.EpochBatches(2000, 32, seed=1)
    grouped = data.EpochBatches(2000, 32, seed=1, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == list(range(2000))
    assert padded(grouped) < 0.7 * padded(random_batches)
    assert padded(grouped) >= lengths.sum()


@pytest.mark.parametrize("group_batches", [1, 2, 4, 50])
def test_length_group_batches_sorts_within_mega_batches(group_batches):
    n, size = 1003, 16  # neither a multiple of the batch nor of the mega-batch: short last batch and mega-batch
    lengths = np.random.default_rng(3).integers(5, 384, size=n)
    sampler = data.EpochBatches(n, size, seed=7, lengths=lengths, group_batches=group_batches)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(n)) and len(batches) == len(sampler)
    assert list(sampler) == batches  # same (seed, epoch): same batches, same order
    sampler.set_epoch(3)
    assert list(sampler) != batches
    assert list(data.EpochBatches(n, size, seed=8, lengths=lengths, group_batches=group_batches)) != list(
        data.EpochBatches(n, size, seed=7, lengths=lengths, group_batches=group_batches))
    # Mega-batches are consecutive runs of group_batches x size indices of the (seed, epoch) permutation; each is
    # sorted longest first and cut into whole batches, so a batch lies in one mega-batch, is sorted, and no two
    # batches of one mega-batch overlap in length.
    mega = size * group_batches
    order = np.random.default_rng([7, 2]).permutation(n)
    home = {int(i): k // mega for k, i in enumerate(order)}
    spans: dict[int, list] = {}
    for b in batches:
        assert len({home[i] for i in b}) == 1
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)
        spans.setdefault(home[b[0]], []).append((lengths[b].min(), lengths[b].max()))
    for runs in spans.values():
        runs.sort()
        assert all(low[1] <= high[0] for low, high in zip(runs, runs[1:]))
    assert all(len(b) == size for b in batches if len(b) != n % size) and sum(len(b) != size for b in batches) == 1
    if group_batches == 1:  # one batch per mega-batch: the same batches as ungrouped ones, only sorted within
        plain = data.EpochBatches(n, size, seed=7)
        plain.set_epoch(2)
        assert sorted(map(sorted, plain)) == sorted(map(sorted, batches))


def test_length_buckets_spread_equal_lengths_over_batches():
    """The questions of one paragraph have windows of almost one length: exact sorting puts them side by side in
    one batch; buckets of 32 tokens keep them in random order within their bucket, at a little more padding."""
    rng = np.random.default_rng(0)
    paragraph = np.repeat(np.arange(100), 8)  # 100 paragraphs x 8 questions
    lengths = rng.integers(50, 384, size=100)[paragraph] + rng.integers(0, 4, size=800)

    def stats(bucket: int):
        batches = list(data.EpochBatches(800, 16, seed=1, lengths=lengths, group_batches=50, bucket=bucket))
        assert sorted(i for b in batches for i in b) == list(range(800))
        distinct = np.mean([len(set(paragraph[b])) for b in batches])
        return distinct, sum(len(b) * lengths[b].max() for b in batches), max(np.ptp(lengths[b]) for b in batches)

    exact, bucketed = stats(1), stats(32)
    assert exact[0] < 5 and bucketed[0] > 9  # distinct paragraphs in a batch of 16
    assert bucketed[2] < 2 * 32 and bucketed[1] < exact[1] + 800 * 32  # a batch spans at most two buckets
    with pytest.raises(ValueError, match="bucket"):
        data.EpochBatches(10, 2, seed=0, lengths=[1] * 10, bucket=0)


def test_fewer_group_batches_more_padding():
    lengths = np.random.default_rng(0).integers(5, 384, size=2000)

    def padded(g):
        return sum(len(b) * lengths[b].max() for b in data.EpochBatches(2000, 16, seed=1, lengths=lengths, group_batches=g))

    assert padded(50) < padded(8) < padded(2)
    with pytest.raises(ValueError):
        data.EpochBatches(10, 2, seed=0, lengths=[1] * 10, group_batches=0)


def test_pad_collator_pads_to_the_longest():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 1},
            {"input_ids": [8], "attention_mask": [1], "labels": 0}]
    batch = data.PadCollator(pad_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_pad_collator_pads_per_token_labels_with_minus_100():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 3, -100]},
            {"input_ids": [8], "attention_mask": [1], "labels": [2]}]
    batch = data.PadCollator(pad_id=0)(rows)
    assert batch["labels"].tolist() == [[-100, 3, -100], [2, -100, -100]]
    assert batch["labels"].dtype == torch.long
    # what the loss ignores: exactly the padded positions and the marked sub-words
    loss = torch.nn.functional.cross_entropy(torch.zeros(2, 3, 4).flatten(0, 1), batch["labels"].flatten(), reduction="sum")
    assert loss.item() == pytest.approx(2 * math.log(4))


def test_corpus_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one line\n\nanother line\n")
    (tmp_path / "b.jsonl").write_text('{"text": "from json", "id": 1}\n{"text": "second", "id": 2}\n')
    ds = data.load_corpus(data.expand_files([str(tmp_path)]), "text")
    assert sorted(ds["text"]) == ["another line", "from json", "one line", "second"]
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(Exception, match="no column 'text'"):
        data.load_corpus([tmp_path / "c.jsonl"], "text")
