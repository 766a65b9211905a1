"""`tlab generate`: text from a causal LM (a `tlab pretrain --objective clm` run, a local model folder, a Hub id)
continuing each prompt, or from an encoder-decoder the output for each input as `tlab predict` makes it (its
translator: the run's prefix, languages and beam search). Decoding is transformers' `generate` with a
`GenerationConfig`: greedy unless sampling is asked for, stop strings, several sequences per prompt, prompts in
left-padded batches, and one prompt's text streamed as it comes (`TextStreamer`)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from tlab import modeling
from tlab.errors import TlabError

DEFAULT_NEW_TOKENS = 64  # causal LMs; an encoder-decoder's default is its run's seq2seq.max_new_tokens
STREAM_INTERVAL = 0.025  # seconds: streamed text is decoded and written at most this often (every token when slower)


@dataclass(frozen=True)
class Settings:
    """How to decode; checked when made, so bad flags fail before a model is loaded."""

    max_new_tokens: Optional[int] = None
    sample: bool = False  # also implied by temperature, top_k or top_p
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    num_beams: Optional[int] = None
    num_return_sequences: int = 1
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()
    batch_size: int = 8

    def __post_init__(self):
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise TlabError(message)

        check(self.max_new_tokens is None or self.max_new_tokens >= 1, f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        check(self.temperature is None or self.temperature > 0,
              f"--temperature must be > 0 when sampling, got {self.temperature} (greedy decoding: leave out --sample, "
              "--temperature, --top-k and --top-p)")
        check(self.top_k is None or self.top_k >= 1, f"--top-k must be >= 1, got {self.top_k}")
        check(self.top_p is None or 0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}")
        check(self.repetition_penalty is None or self.repetition_penalty > 0,
              f"--repetition-penalty must be > 0 (1 = none), got {self.repetition_penalty}")
        check(self.num_beams is None or self.num_beams >= 1, f"--num-beams must be >= 1, got {self.num_beams}")
        check(self.num_return_sequences >= 1, f"--num-return-sequences must be >= 1, got {self.num_return_sequences}")
        check(self.num_return_sequences == 1 or self.sampling or (self.num_beams or 1) >= self.num_return_sequences,
              f"--num-return-sequences {self.num_return_sequences} needs sampling (--sample) or --num-beams >= "
              f"{self.num_return_sequences}: greedy decoding has one answer")
        check(all(self.stop), "--stop strings must not be empty")
        check(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")

    @property
    def sampling(self) -> bool:
        return self.sample or any(v is not None for v in (self.temperature, self.top_k, self.top_p))


@dataclass
class Output:
    prompt: str
    text: str  # the generated text only (cut before the first stop string)
    prompt_tokens: int
    new_tokens: int  # tokens generated, the end-of-text token and padding not counted
    finish_reason: str  # stop (a stop string) | eos (end of text) | length (max_new_tokens)
    sequence: int = 0


def unescape(text: str) -> str:
    r"""--stop '\n' as typed in a shell: \n and \t are a newline and a tab, \\ a backslash."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def stream_class():
    from transformers import TextStreamer

    class StopStreamer(TextStreamer):
        """transformers' TextStreamer writing through `write`: a causal LM's prompt, which it decodes along, is
        left out by its length in characters (`skip`), what may begin a stop string is held back, and nothing is
        written from the first stop string on. It shows the text generation returns."""

        def __init__(self, tokenizer, write: Callable[[str], None], stops: Sequence[str], skip: Optional[int]):
            # skip None: an encoder-decoder, whose first tokens (the decoder's start) are no text
            super().__init__(tokenizer, skip_prompt=skip is None, skip_special_tokens=True)
            self.write, self.stops, self.skip, self.held, self.stopped = write, tuple(stops), skip or 0, "", False
            self.due = None  # when the tokens put next are decoded; None: the first put (the prompt) is

        def put(self, value):
            """TextStreamer decodes its whole cache of tokens at every token, right after the forward pass (caches
            cold), a measurable share of a small model's time on a CPU (BENCHMARKS.md, "Text generation speed").
            Tokens that come within STREAM_INTERVAL of the last decoding wait in the cache and are decoded with the
            next ones: the same text, in pieces of a few tokens where tokens come faster than anyone reads."""
            now = time.perf_counter()
            if self.due is not None and now < self.due:
                self.token_cache.extend(value.reshape(-1).tolist())
                return
            self.due = now + STREAM_INTERVAL
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False):
            dropped = min(self.skip, len(text))
            text, self.skip = text[dropped:], self.skip - dropped
            if self.stopped:
                return
            self.held, found = cut(self.held + text, self.stops)
            keep = 0 if stream_end or found else max(
                (k for s in self.stops for k in range(1, len(s)) if self.held.endswith(s[:k])), default=0)
            shown, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
            if shown:
                self.write(shown)
            self.stopped = found

    return StopStreamer


@dataclass
class Generator:
    model: object
    tokenizer: object
    encoder_decoder: bool = False
    prefix: str = ""  # encoder-decoders: put before each input (T5's task prefix)
    max_source: Optional[int] = None  # encoder-decoders: input tokens kept
    options: dict = field(default_factory=dict)  # encoder-decoders: the run's generate() options (beams, lengths)

    @classmethod
    def load(cls, name: str) -> "Generator":
        from transformers import AutoConfig, AutoModelForCausalLM

        from tlab.runtime import quiet_libraries

        quiet_libraries()
        path = modeling.resolve_checkpoint(name)
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as exc:
            raise TlabError(f"could not read the model config of {name!r}: {str(exc).splitlines()[0][:200]}") from None
        from tlab.tasks import seq2seq

        if seq2seq.kind_of(config) == "encoder-decoder":
            from tlab.tasks import scaffold
            from tlab.tasks.translation import Translator

            t = Translator(name, scaffold.run_config(name, None))  # as `tlab predict` translates
            found = cls(t.model, t.tokenizer, True, t.prefix, t.max_source, dict(t.options))
        elif modeling.is_causal_lm(config):
            model = modeling.load_pretrained(AutoModelForCausalLM, path, trained_only="causal-LM head").eval()
            tokenizer = modeling.load_tokenizer(path)
            tokenizer.padding_side = "left"  # a batch's prompts end where generation starts
            if tokenizer.pad_token is None:
                if tokenizer.eos_token is None:
                    raise TlabError(f"the tokenizer of {name} has neither a padding nor an end-of-text token")
                tokenizer.pad_token = tokenizer.eos_token
            found = cls(model, tokenizer)
        else:
            kind = (config.architectures or [config.model_type])[0]
            raise TlabError(f"{name} is a {kind} model, which does not generate text: tlab generate needs a causal LM "
                            "(GPT-2, Llama, a `tlab pretrain --objective clm` run) or an encoder-decoder (T5, BART, "
                            "Marian, a translation run)")
        if torch.cuda.is_available():
            found.model.to("cuda")
        return found

    def generation_config(self, s: Settings):
        """The model's own config (token ids, an encoder-decoder's forced tokens) with the decoding asked for:
        greedy (or the run's beam search) unless sampling, whatever the model's generation_config.json prefers."""
        gen = copy.deepcopy(self.model.generation_config)
        beams = s.num_beams or (1 if s.sampling or not self.encoder_decoder else self.options.get("num_beams", 1))
        new_tokens = s.max_new_tokens or self.options.get("max_new_tokens", DEFAULT_NEW_TOKENS)
        gen.update(do_sample=s.sampling, num_beams=beams, num_return_sequences=s.num_return_sequences,
                   max_new_tokens=new_tokens, max_length=None, repetition_penalty=s.repetition_penalty,
                   temperature=s.temperature if s.sampling else None, top_k=s.top_k if s.sampling else None,
                   top_p=s.top_p if s.sampling else None, stop_strings=list(s.stop) or None,
                   pad_token_id=self.tokenizer.pad_token_id if gen.pad_token_id is None else gen.pad_token_id)
        if self.encoder_decoder and beams > 1:
            gen.update(length_penalty=self.options.get("length_penalty", 1.0), early_stopping=True)
        return gen

    def streams(self, prompts: Sequence[str], s: Settings) -> bool:
        """One prompt, one sequence, no beams: the text can be shown as it is produced."""
        return len(prompts) == 1 and s.num_return_sequences == 1 and self.generation_config(s).num_beams == 1

    def __call__(self, prompts: Sequence[str], s: Settings, write: Optional[Callable[[str], None]] = None) -> list[Output]:
        """Outputs in prompt order (num_return_sequences per prompt); `write` streams the text of a single
        prompt's single sequence as it is produced."""
        gen = self.generation_config(s)
        if s.seed is not None:
            from transformers import set_seed

            set_seed(s.seed)
        outputs: list[Output] = []
        for start in range(0, len(prompts), s.batch_size):
            outputs += self._batch(list(prompts[start : start + s.batch_size]), gen, s, write)
        return outputs

    def _batch(self, prompts: list[str], gen, s: Settings, write) -> list[Output]:
        tok, model = self.tokenizer, self.model
        texts = [self.prefix + p for p in prompts] if self.encoder_decoder else prompts
        limits = dict(truncation=True, max_length=self.max_source) if self.encoder_decoder else {}
        enc = tok(texts, padding=True, return_tensors="pt", **limits).to(model.device)
        lengths = enc["attention_mask"].sum(1).tolist()
        if self.encoder_decoder and not s.max_new_tokens and self.options.get("max_length_a"):
            from tlab.tasks import seq2seq  # the run's bound on output length: a x source length + b

            gen.max_new_tokens = seq2seq.batch_options(self.options, enc["input_ids"])["max_new_tokens"]
        positions = None if self.encoder_decoder else modeling.max_positions(model.config)
        if positions and enc["input_ids"].shape[1] + gen.max_new_tokens > positions:
            raise TlabError(f"the prompt ({enc['input_ids'].shape[1]} tokens) and --max-new-tokens {gen.max_new_tokens} "
                            f"exceed the model's {positions} positions: shorten the prompt or lower --max-new-tokens")
        # a prompt's own tokens (left padding removed): its continuation is decoded after them, as the text
        # generation pipeline does, since a SentencePiece tokenizer drops the space that opens a text decoded alone
        heads = [[] if self.encoder_decoder else ids[len(ids) - n :] for ids, n in zip(enc["input_ids"].tolist(), lengths)]
        streamer = None
        if write is not None:
            skip = None if self.encoder_decoder else len(tok.decode(heads[0], skip_special_tokens=True))
            streamer = stream_class()(tok, write, s.stop, skip)
        with torch.no_grad():
            out = model.generate(**enc, generation_config=gen, tokenizer=tok if s.stop else None, streamer=streamer)
        new = out if self.encoder_decoder else out[:, enc["input_ids"].shape[1] :]  # (B x sequences, T)
        found = []
        for row, ids in enumerate(new.tolist()):
            i = row // s.num_return_sequences
            found.append(self._output(prompts[i], heads[i], lengths[i], ids, gen, s.stop, row % s.num_return_sequences))
        return found

    def _output(self, prompt: str, head: list[int], prompt_tokens: int, ids: list[int], gen, stops, sequence: int) -> Output:
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else \
            getattr(self.model.config, "decoder_start_token_id", None)
        if self.encoder_decoder and ids and ids[0] == start:
            ids = ids[1:]
        ended = next((k for k, t in enumerate(ids) if t in eos), None)
        if ended is not None:
            ids = ids[:ended]
        while ids and ids[-1] == gen.pad_token_id:  # a sequence ended by a stop string, padded to the batch's end
            ids = ids[:-1]
        shown = len(self.tokenizer.decode(head, skip_special_tokens=True)) if head else 0
        text, stopped = cut(self.tokenizer.decode(head + ids, skip_special_tokens=True)[shown:], stops)
        reason = "stop" if stopped else "eos" if ended is not None else "length"
        return Output(prompt, text, prompt_tokens, len(ids), reason, sequence)


def run(model: str, prompts: Sequence[str], s: Settings, echo: Callable[..., None], as_json: bool = False,
        stream: bool = True) -> list[Output]:
    """Print each output (a causal LM's after its prompt; one blank line between outputs) or one JSON line each."""
    if not prompts or not all(p.strip() for p in prompts):
        raise TlabError("no prompt: give prompts as arguments or one per line on stdin (empty prompts are refused)")
    generator = Generator.load(model)
    shown = (lambda o: o.text) if generator.encoder_decoder else (lambda o: o.prompt + o.text)
    if stream and not as_json and generator.streams(prompts, s):
        echo("" if generator.encoder_decoder else prompts[0], nl=False)
        outputs = generator(prompts, s, write=lambda text: echo(text, nl=False))
        echo("")
        return outputs
    outputs = generator(prompts, s)
    for k, o in enumerate(outputs):
        if as_json:
            echo(json.dumps({"prompt": o.prompt, "text": o.text, "prompt_tokens": o.prompt_tokens,
                             "new_tokens": o.new_tokens, "finish_reason": o.finish_reason, "sequence": o.sequence},
                            ensure_ascii=False))
        else:
            echo(("" if k == 0 else "\n") + shown(o))
    return outputs
