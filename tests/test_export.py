"""`tlab export`: int8 / fp32 ONNX folders that `tlab eval` and `tlab predict` take as --model. Tiny 2-layer BERTs
(tokenizers trained in-process, test_gate's helpers) for the QA and NER exports and the bad input; a short MiniLM
fine-tune on real SST-2 rows (slow) for int8-vs-fp32 agreement, size and `tlab eval` of the export vs the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import gpt2_folder, one_line_error
from test_gate import tiny_bert
from tlab import export, outputs
from tlab.cli import app

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
DATA = Path(__file__).parent / "data"
SQUAD = DATA / "squad" / "dev-v1.1-sample.json"
runner = CliRunner()
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_ROWS = [{"tokens": ["John", "lives", "in", "Paris", "."], "ner_tags": ["B-PER", "O", "O", "B-LOC", "O"]},
            {"tokens": ["Mary", "Ann", "Smith", "met", "Bob"], "ner_tags": ["B-PER", "I-PER", "I-PER", "O", "B-PER"]},
            {"tokens": ["Rome", "and", "New", "York"], "ner_tags": ["B-LOC", "O", "B-LOC", "I-LOC"]}] * 5


def invoke(*args: str, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def exported(model: Path, out: Path, quantize: str = "int8") -> Path:
    result = invoke("export", "--model", model, "--output", out, "--quantize", quantize)
    assert result.exit_code == 0, result.output
    return out


def metrics_of(*args) -> dict:
    result = invoke("eval", *args, "--output", Path(args[args.index("--model") + 1]).parent / "results.json")
    assert result.exit_code == 0, result.output
    return json.loads((Path(args[args.index("--model") + 1]).parent / "results.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qa")
    doc = json.loads(SQUAD.read_text())
    model = tiny_bert(tmp / "bert", [p["context"] for a in doc["data"] for p in a["paragraphs"]], "BertForQuestionAnswering")
    return model, exported(model, tmp / "export", "none")


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ner")
    valid = tmp / "valid.jsonl"
    valid.write_text("".join(json.dumps(r) + "\n" for r in NER_ROWS))
    model = tiny_bert(tmp / "bert", [" ".join(r["tokens"]) for r in NER_ROWS], "BertForTokenClassification",
                      num_labels=len(NER_LABELS), id2label=dict(enumerate(NER_LABELS)),
                      label2id={n: i for i, n in enumerate(NER_LABELS)})
    return model, exported(model, tmp / "export"), valid


# -- the export folder, QA and NER through tlab eval / predict ------------------------------------------------------
def test_qa_export_evaluates_and_answers_like_the_torch_model(qa):
    model, out = qa
    facts = json.loads((out / outputs.EXPORT_FILE).read_text())
    assert facts["backend"] == "onnxruntime" and facts["quantization"]["mode"] == "none"
    assert facts["outputs"] == ["start_logits", "end_logits"] and facts["check"]["max_abs_diff"] < 1e-3
    assert {"model.onnx", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob(".export*"))  # the temporary folder was renamed into place
    args = ["--task", "squad", "--validation-file", SQUAD, "qa.max_seq_length=128", "qa.doc_stride=32"]
    torch_scores = metrics_of(*args, "--model", model)
    onnx_scores = metrics_of(*args, "--model", out)
    assert onnx_scores.keys() == torch_scores.keys() and onnx_scores == pytest.approx(torch_scores, abs=1e-6)
    ask = ["--question", "Who wrote it?", "--context", "It was written by Ada Lovelace in 1843 in London.", "--json"]
    answers = [json.loads(invoke("predict", "--model", m, *ask).output) for m in (model, out)]
    assert answers[0]["answer"] == answers[1]["answer"] and answers[0]["score"] == pytest.approx(answers[1]["score"], abs=1e-4)


def test_ner_int8_export_evaluates_and_tags(ner):
    model, out, valid = ner
    card = (out / "README.md").read_text()
    assert "## Quantisation (tlab export)" in card and "int8" in card
    torch_scores = metrics_of("--task", "ner", "--validation-file", valid, "--model", model)
    onnx_scores = metrics_of("--task", "ner", "--validation-file", valid, "--model", out)
    assert onnx_scores.keys() == torch_scores.keys()
    assert abs(onnx_scores["accuracy"] - torch_scores["accuracy"]) <= 0.1  # a random tiny head: int8 moves a few tags
    found = invoke("predict", "--model", out, "--json", "John lives in Paris.")
    assert found.exit_code == 0, found.output
    assert json.loads(found.output.splitlines()[-1])["text"] == "John lives in Paris."


# -- bad input: one line, exit 2, nothing left behind ------------------------------------------------------------
def test_bad_input_is_one_line_and_leaves_nothing(ner, tmp_path):
    model, out, _valid = ner
    new = tmp_path / "new"
    cases = [
        (["--model", model, "--output", new, "--quantize", "int4"], ["int4", "int8, none"]),
        (["--model", tmp_path / "missing", "--output", new], ["missing"]),
        (["--model", out, "--output", new], ["already an export"]),
        (["--output", new], ["pass --model"]),
        (["--model", model], ["pass --output"]),
        (["--model", model, "--output", out], ["already exists", "--overwrite"]),
        (["--model", model, "--output", model, "--overwrite"], ["would replace the model"]),
    ]
    for args, needles in cases:
        result = invoke("export", *args)
        assert result.exit_code == 2, (args, result.output)
        one_line_error(result, *needles)
        assert not new.exists() and not list(tmp_path.glob(".new*"))
    run_like = tmp_path / "run"
    run_like.mkdir()
    (run_like / "config.yaml").write_text("task: sst2\n")
    one_line_error(invoke("export", "--model", model, "--output", run_like, "--overwrite"), "earlier export only")
    assert (run_like / "config.yaml").is_file()


def test_models_the_backend_cannot_export_are_named(tmp_path):
    gpt2 = gpt2_folder(tmp_path / "gpt2", DATA / "corpus" / "tinyshakespeare.txt")
    one_line_error(invoke("export", "--model", gpt2, "--output", tmp_path / "out"), "GPT2LMHeadModel (gpt2)", "sequence classifiers")
    seq2seq = tmp_path / "t5"
    seq2seq.mkdir()
    (seq2seq / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
                                                     "is_encoder_decoder": True}))
    one_line_error(invoke("export", "--model", seq2seq, "--output", tmp_path / "out"), "T5ForConditionalGeneration (t5)",
                   "key/value cache")
    assert not (tmp_path / "out").exists()


def test_training_refuses_an_export(ner, tmp_path):
    _model, out, valid = ner
    start = invoke("finetune", "--task", "ner", "--model", out, "--train-file", valid, "-o", tmp_path / "run")
    assert start.exit_code == 2
    one_line_error(start, "tlab export", "no torch weights", "training")
    assert not (tmp_path / "run").exists()
    resume = invoke("finetune", "--task", "ner", "--resume", "-o", out, "--train-file", valid)
    assert resume.exit_code == 2
    one_line_error(resume, "tlab export", "no checkpoints")


def test_a_failed_export_leaves_an_earlier_one_whole(ner, monkeypatch, tmp_path):
    model, out, _valid = ner
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "int8", broken)
    result = invoke("export", "--model", model, "--output", out, "--overwrite")
    assert result.exit_code != 0 and "disk on fire" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_missing_backend_names_the_extra(ner, monkeypatch, tmp_path):
    import importlib.util

    model, _out, _valid = ner
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    one_line_error(invoke("export", "--model", model, "--output", tmp_path / "x"), 'pip install "tlab-cli[export]"')
    assert not (tmp_path / "x").exists()


def test_export_help_stays_light():
    code = ("import sys; from typer.testing import CliRunner; from tlab.cli import app; "
            "r = CliRunner().invoke(app, ['export', '--help']); assert r.exit_code == 0 and '--quantize' in r.output; "
            "print(','.join(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


# -- a real fine-tuned MiniLM on SST-2: int8 vs fp32, and tlab eval of the export vs the run --------------------------
@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    from test_finetune import finetune_cfg, sst2_dir

    from tlab import pipeline

    tmp = tmp_path_factory.mktemp("sst2")
    data_dir = sst2_dir(tmp)
    pipeline.run(finetune_cfg(tmp / "run", data_dir, "train.max_steps=40", "train.eval_every=40"), echo=lambda m: None)
    return tmp / "run", exported(tmp / "run", tmp / "int8"), exported(tmp / "run", tmp / "fp32", "none")


@pytest.mark.slow  # fine-tunes MiniLM for 40 steps
def test_int8_agrees_with_fp32_on_real_sst2_and_is_smaller(sst2):
    run, int8, fp32 = sst2
    facts = {p.name: json.loads((p / outputs.EXPORT_FILE).read_text()) for p in (int8, fp32)}
    assert facts["int8"]["bytes"] * 2 < facts["fp32"]["bytes"]  # embeddings and linear layers in int8: ~4x
    assert facts["int8"]["task"] == "sst2" and (int8 / "config.yaml").read_text() == (run / "config.yaml").read_text()
    sentences = [row.split("\t")[0] for row in (run.parent / "sst2" / "dev.tsv").read_text().splitlines()[1:]]
    labels = {}
    for name, folder in (("int8", int8), ("fp32", fp32)):
        result = invoke("predict", "--model", folder, input="\n".join(sentences) + "\n")
        assert result.exit_code == 0, result.output
        labels[name] = [line.split("\t")[0] for line in result.output.splitlines()]
    assert len(labels["int8"]) == 200
    assert sum(a == b for a, b in zip(labels["int8"], labels["fp32"])) >= 0.9 * 200


@pytest.mark.slow
def test_eval_scores_the_export_as_the_run_was_trained(sst2):
    run, int8, _fp32 = sst2
    on_run, on_export = metrics_of("--model", run), metrics_of("--model", int8)  # no --task: each one's config.yaml
    assert on_export.keys() == on_run.keys() and on_export["examples"] == 200
    assert abs(on_export["accuracy"] - on_run["accuracy"]) <= 0.03
    gate = invoke("eval", "--model", int8, "--min", "accuracy=1.01")
    assert gate.exit_code == 1  # a CI gate on the artefact that ships
