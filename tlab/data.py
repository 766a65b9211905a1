"""Data for every task: corpora from local files or the Hub, tokenization cached by fingerprint, packing,
batch samplers and collators. Only `datasets`, `numpy` and `torch` are used here; tasks decide what to load.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from tlab.errors import TlabError

TEXT_SUFFIXES = (".txt", ".text", ".raw", ".tokens")
JSON_SUFFIXES = (".jsonl", ".json")
TABLE_SUFFIXES = (".csv", ".tsv")


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("TLAB_CACHE", Path.home() / ".cache" / "tlab"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def on_disk(build, *sources: Path, key: str = ""):
    """`build()`'s in-memory Dataset, saved once under the cache by the sources' path, size and mtime (+ `key`) and
    memory-mapped from there: datasets caches `map` results only for datasets backed by files, so the tokenized
    features of a local file are then computed once, not at every run."""
    import datasets

    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources)
    path = cache_dir("tables") / hashlib.sha1(f"{stamp}|{key}|v1".encode()).hexdigest()[:20]
    if not (path / "dataset_info.json").is_file():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        build().save_to_disk(str(tmp))
        if path.exists():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return datasets.load_from_disk(str(path))


# -- corpora ---------------------------------------------------------------------------------------------------
def expand_files(paths: Sequence[str]) -> list[Path]:
    """Files and folders -> the corpus files they name, checked to exist, hold data and be text."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES + TABLE_SUFFIXES)
            if not found:
                raise TlabError(f"folder {raw} holds no .txt, .jsonl, .json, .csv or .tsv files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise TlabError(f"training file not found: {raw}")
    for path in files:
        check_text_file(path)
    return files


def check_text_file(path: Path) -> None:
    if path.stat().st_size == 0:
        raise TlabError(f"file {path} is empty")
    head = path.read_bytes()[:65536]
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":  # a multi-byte character cut at the 64 KiB boundary is fine
            raise TlabError(f"file {path} is not UTF-8 text (binary data at byte {exc.start})") from None
    if not head.strip():
        raise TlabError(f"file {path} holds only whitespace")


def load_corpus(files: Sequence[Path], text_column: str):
    """Local corpus files -> a datasets.Dataset with one column `text` (one row per non-blank line/record)."""
    import datasets

    kinds = {("text" if p.suffix not in JSON_SUFFIXES + TABLE_SUFFIXES else p.suffix.lstrip(".")) for p in files}
    parts = []
    for kind in sorted(kinds):
        chosen = [str(p) for p in files if ("text" if p.suffix not in JSON_SUFFIXES + TABLE_SUFFIXES else p.suffix.lstrip(".")) == kind]
        builder, extra = {"text": ("text", {}), "jsonl": ("json", {}), "json": ("json", {}),
                          "csv": ("csv", {}), "tsv": ("csv", {"sep": "\t"})}[kind]
        try:
            ds = datasets.load_dataset(builder, data_files=chosen, split="train", **extra)
        except Exception as exc:  # datasets raises many types for malformed files
            raise TlabError(f"could not read {', '.join(chosen)}: {str(exc).splitlines()[0][:200]}") from None
        parts.append(_text_only(ds, text_column, ", ".join(chosen)))
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
    if len(ds) == 0:
        raise TlabError(f"no text found in {', '.join(map(str, files))}")
    return ds


def load_hub_corpus(dataset: str, config: Optional[str], split: str, text_column: str):
    import datasets

    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as exc:
        raise TlabError(
            f"could not load Hub dataset {dataset!r} ({str(exc).splitlines()[0][:160]}); offline, pass --train-file"
        ) from None
    ds = _text_only(ds, text_column, dataset)
    return ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)


def _text_only(ds, column: str, source: str):
    if column not in ds.column_names:
        raise TlabError(f"{source} has no column {column!r} (columns: {', '.join(ds.column_names)}); set data.text_column")
    ds = ds.select_columns([column])
    return ds.rename_column(column, "text") if column != "text" else ds


# -- packing ---------------------------------------------------------------------------------------------------
def tokenize_corpus(ds, tokenizer, add_special_tokens: bool, append_eos: bool, num_proc: int):
    """Tokenize every line once; datasets caches the result by fingerprint (tokenizer included)."""
    eos = tokenizer.eos_token_id if append_eos else None

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=add_special_tokens, truncation=False)["input_ids"]
        return {"input_ids": [row + [eos] for row in ids] if eos is not None else ids}

    return ds.map(encode, batched=True, remove_columns=ds.column_names, num_proc=num_proc if num_proc > 1 else None,
                  desc="tokenizing")


def pack(tokenized, block_size: int) -> np.ndarray:
    """All token ids end to end, cut into (N, block_size) blocks. Only the last partial block is dropped,
    unlike run_mlm.py's group_texts, which drops a remainder in every map batch."""
    import pyarrow as pa

    column = tokenized.data.column("input_ids")
    flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]) if column.num_chunks else pa.array([], pa.int32())
    ids = flat.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    n_blocks = len(ids) // block_size
    return ids[: n_blocks * block_size].reshape(n_blocks, block_size)


def packed_blocks(tokenized, block_size: int) -> np.ndarray:
    """`pack`, cached next to the tokenized data's fingerprint so later runs and other ranks just map it."""
    key = hashlib.sha1(f"{tokenized._fingerprint}-{block_size}".encode()).hexdigest()[:16]
    path = cache_dir("packed") / f"{key}.npy"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, pack(tokenized, block_size))
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


class Blocks(torch.utils.data.Dataset):
    """Fixed-length token blocks, memory-mapped: (block_size,) int64 tensors."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index):
        """An int -> the block; a batch key (epoch, batch number, index) from EpochBatches(keyed=True) -> the
        block with its key, so that the collator can draw this batch's MLM masks from the key alone."""
        if isinstance(index, tuple):
            return {"block": torch.from_numpy(np.asarray(self.blocks[index[2]], dtype=np.int64)), "key": index}
        return torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))


# -- batching --------------------------------------------------------------------------------------------------
class EpochBatches(torch.utils.data.Sampler):
    """Batches of indices, reshuffled each epoch from (seed, epoch) alone, so a resumed run sees the same order.

    With `lengths`, examples of similar length share a batch (less padding): shuffle, sort within mega-batches
    of `group_batches` batches (longest first), then shuffle the batches — the scheme of transformers'
    LengthGroupedSampler (which uses 50). Fewer batches per mega-batch keep batches more random (more padding)."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, lengths: Optional[Sequence[int]] = None,
                 keyed: bool = False, group_batches: int = 50, bucket: int = 1):
        if group_batches < 1 or bucket < 1:
            raise ValueError(f"group_batches and bucket must be >= 1, got {group_batches} and {bucket}")
        self.n, self.batch_size, self.seed, self.shuffle, self.keyed = n, batch_size, seed, shuffle, keyed
        self.group_batches = group_batches
        # lengths rounded down to buckets: the stable sort then keeps the shuffled order within a bucket, so
        # examples of almost the same length (the questions of one paragraph) are not all put side by side
        self.lengths = None if lengths is None else np.asarray(lengths) // bucket
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list]:
        """Lists of indices, or with `keyed` of (epoch, batch number, index) keys (see Blocks)."""
        for number, batch in enumerate(self._batches()):
            yield [(self.epoch, number, i) for i in batch] if self.keyed else batch

    def _batches(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = np.arange(self.n)
            yield from (order[i : i + self.batch_size].tolist() for i in range(0, self.n, self.batch_size))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        if self.lengths is not None:
            mega = self.batch_size * self.group_batches
            # Mega-batches of whole batches (the last one shorter), as LengthGroupedSampler cuts them: no batch
            # straddles two mega-batches, so each batch holds windows of one sorted run.
            chunks = (order[i : i + mega] for i in range(0, self.n, mega))
            order = np.concatenate([chunk[np.argsort(-self.lengths[chunk], kind="stable")] for chunk in chunks])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, self.n, self.batch_size)]
        for index in rng.permutation(len(batches)):
            yield batches[index]


class LMCollator:
    """Stacks packed blocks into (B, T) and adds labels: MLM masking (80/10/10, via transformers' collator)
    done on the whole batch at once, or CLM labels = inputs (the model shifts them).

    Keyed training batches get masks drawn from a generator seeded by (seed, epoch, batch number, first index)
    alone. Masks from the global RNG made resume inexact: accelerate's loader collates batch N+1 before it yields
    batch N, so the RNG state saved with checkpoint N had already drawn N+1's masks. Unkeyed batches (evaluation)
    use the global RNG, which the evaluation seeds."""

    def __init__(self, tokenizer, mlm: bool, mlm_probability: float = 0.15, seed: int = 0):
        from transformers import DataCollatorForLanguageModeling

        self.mlm, self.seed = mlm, seed
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability) if mlm else None
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        keyed = isinstance(items[0], dict)
        input_ids = torch.stack([item["block"] for item in items] if keyed else items)  # (B, T)
        if not self.mlm:
            return {"input_ids": input_ids, "labels": input_ids.clone()}
        generator = None
        if keyed:
            epoch, number, first = items[0]["key"]
            seed = np.random.SeedSequence([self.seed, epoch, number, first]).generate_state(2, np.uint32)
            generator = torch.Generator().manual_seed(int(seed[0]) << 32 | int(seed[1]))
        self.masker.generator = generator
        special = torch.isin(input_ids, self.special_ids)
        input_ids, labels = self.masker.torch_mask_tokens(input_ids, special_tokens_mask=special)
        return {"input_ids": input_ids, "labels": labels}


class PadCollator:
    """Pads tokenized examples to the longest in the batch (dynamic padding): (B, T_max) tensors. Labels are one
    per example (B,), one per token (token classification), padded with -100, which the loss ignores, or a
    multi-hot row of floats per example (multi-label classification: (B, labels), nothing to pad)."""

    LABEL_PAD = -100

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            if key == "labels":
                continue
            fill = self.pad_id if key == "input_ids" else 0
            batch[key] = torch.tensor([r[key] + [fill] * (longest - len(r[key])) for r in rows], dtype=torch.long)
        if "labels" in rows[0]:
            labels = [r["labels"] for r in rows]
            if isinstance(labels[0], list) and labels[0] and isinstance(labels[0][0], float):  # (B, labels) targets
                batch["labels"] = torch.tensor(labels, dtype=torch.float32)
            elif isinstance(labels[0], list):  # (B, T_max)
                labels = [row + [self.LABEL_PAD] * (longest - len(row)) for row in labels]
                batch["labels"] = torch.tensor(labels, dtype=torch.long)
            else:  # (B,)
                batch["labels"] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], float) else torch.long)
        return batch
