import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
import shutil
from pathlib import Path

import datasets
import pytest

from tlab.errors import TlabError
from tlab.tasks.glue_data import (GLUE_TASKS, available_splits, get_spec, load_custom_file, load_glue_hub,
                                  load_glue_split, resolve_task_dir)

DATA = Path(__file__).parent / "data" / "glue"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# --- the task table ---------------------------------------------------------------------------------------

def test_table_has_all_nine_tasks_in_hub_label_order():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert get_spec("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_spec("rte").label_map == {"entailment": 0, "not_entailment": 1}
    assert get_spec("qnli").label_names == ("entailment", "not_entailment")
    assert get_spec("wnli").label_names == ("not_entailment", "entailment")
    assert get_spec("mrpc").label_names == ("not_equivalent", "equivalent")
    assert get_spec("stsb").is_regression and get_spec("stsb").num_labels == 1
    assert get_spec("mrpc").metrics == ("f1", "accuracy")
    assert get_spec("cola").metrics == ("matthews_correlation",)
    mnli = get_spec("mnli")
    assert mnli.validation_splits == ("validation_matched", "validation_mismatched")
    assert mnli.split_files["validation_mismatched"] == "dev_mismatched.tsv"
    for spec in GLUE_TASKS.values():
        assert spec.main_metric in spec.metrics
        assert set(spec.validation_splits) <= set(spec.split_files)
    assert len({hash(s) for s in GLUE_TASKS.values()}) == 9  # frozen specs stay hashable


def test_unknown_task_suggests_closest_name():
    with pytest.raises(TlabError, match=r"unknown task 'sst22'; did you mean 'sst2'\? \(known: cola, sst2"):
        get_spec("sst22")
    with pytest.raises(TlabError, match=r"unknown task 'xyzzy'; \(known:"):
        get_spec("xyzzy")
    assert get_spec("SST2").name == "sst2"


# --- the quirks of the real files -------------------------------------------------------------------------

def test_mrpc_bom_header_and_bare_quotes():
    assert (DATA / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    ds = load_glue_split(get_spec("mrpc"), DATA, "validation")
    assert len(ds) == 40 and ds.column_names == ["text_a", "text_b", "label"]
    # A field that opens a quote it never closes: CSV quoting would have merged lines here.
    assert ds[0]["text_b"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert ds[0]["label"] == 1 and ds[1]["label"] == 0
    train = load_glue_split(get_spec("mrpc"), DATA, "train")
    assert 'whom he called "the witness",' in train[0]["text_a"]


def test_cola_headerless_without_final_newline():
    spec = get_spec("cola")
    train = load_glue_split(spec, DATA, "train")
    assert len(train) == 42 and "text_b" not in train.column_names
    assert train[0]["text_a"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train[-1]["text_a"] == 'Susan whispered "Shut up" at them.'
    assert set(train["label"]) == {0, 1}
    assert not (DATA / "CoLA" / "dev.tsv").read_bytes().endswith(b"\n")
    dev = load_glue_split(spec, DATA, "validation")
    assert len(dev) == 40 and dev[-1]["text_a"] == "John talked to Bill about himself."


def test_cola_official_train_file_given_as_train_file_reads_headerless(tmp_path):
    """--task cola --train-file CoLA/train.tsv: the official headerless layout, not its first row taken as a header;
    a user's CoLA TSV with a header row is still read by it."""
    from tlab.config import RunConfig
    from tlab.tasks.glue import load_split

    spec = get_spec("cola")
    official = load_glue_split(spec, DATA, "train")
    given = load_split(RunConfig(), spec, "train", [str(DATA / "CoLA" / "train.tsv")])
    assert given["text_a"] == official["text_a"] and given["label"] == official["label"] and len(given) == 42
    own = write(tmp_path / "own.tsv", "sentence\tlabel\nThe cat sat.\t1\nCat the sat.\t0\n")
    assert load_split(RunConfig(), spec, "train", [str(own)])["label"] == [1, 0]
    with pytest.raises(TlabError, match="lacks column"):  # another headerless layout is still named, not guessed
        load_split(RunConfig(), spec, "train", [str(write(tmp_path / "two.tsv", "The cat sat.\t1\nCat the sat.\t0\n"))])


def test_stsb_float_scores_and_unbalanced_quotes():
    ds = load_glue_split(get_spec("stsb"), DATA, "train")
    assert ds.features["label"] == datasets.Value("float32")
    assert len(ds) == 44 and ds[0]["label"] == 5.0 and abs(ds[1]["label"] - 3.8) < 1e-6
    assert '"Then the captain was gone.' in ds["text_a"]
    dev = load_glue_split(get_spec("stsb"), DATA, "validation")
    assert len(dev) == 46 and dev[-1]["label"] == 0.0  # integer-looking scores ("0", "3") are floats too


def test_rte_and_qnli_string_labels():
    rte = load_glue_split(get_spec("rte"), DATA, "train")
    assert rte.features["label"] == datasets.Value("int64")
    assert rte[0]["text_a"] == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert rte[0]["label"] == 1  # not_entailment
    assert rte["label"].count(0) == 21  # entailment rows in the sample
    qnli = load_glue_split(get_spec("qnli"), DATA, "validation")
    assert qnli[0]["label"] == 0 and qnli[0]["text_a"].startswith("What came into force")


def test_sst2_single_sentence_keeps_text_verbatim():
    ds = load_glue_split(get_spec("sst2"), DATA, "train")
    assert ds.column_names == ["text_a", "label"] and len(ds) == 40
    assert ds[0] == {"text_a": "hide new secretions from the parental units ", "label": 0}
    assert any("`` best man ''" in t for t in ds["text_a"])


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "stsb", "qnli", "rte", "wnli"])
def test_every_sample_file_loads_every_row(name):
    spec = get_spec(name)
    for split in available_splits(spec, DATA):
        path = DATA / spec.folder / spec.split_files[split]
        rows = len(path.read_bytes().rstrip(b"\n").split(b"\n")) - (1 if spec.has_header else 0)
        assert len(load_glue_split(spec, DATA, split)) == rows


# --- finding the files ------------------------------------------------------------------------------------

def test_root_or_task_folder(tmp_path):
    spec = get_spec("rte")
    assert resolve_task_dir(spec, DATA) == DATA / "RTE"
    assert resolve_task_dir(spec, DATA / "RTE") == DATA / "RTE"
    own = tmp_path / "my_rte"
    shutil.copytree(DATA / "RTE", own)
    assert load_glue_split(spec, own, "train")[:] == load_glue_split(spec, DATA, "train")[:]
    with pytest.raises(TlabError, match="looks like the RTE folder, but the task is sst2"):
        resolve_task_dir(get_spec("sst2"), DATA / "RTE")
    with pytest.raises(TlabError, match=r"no mnli data in --data-dir .*MNLI/train.tsv"):
        resolve_task_dir(get_spec("mnli"), DATA)
    with pytest.raises(TlabError, match="is not a folder"):
        resolve_task_dir(spec, tmp_path / "nowhere")


def test_available_splits():
    assert available_splits(get_spec("sst2"), DATA) == ["train"]
    assert available_splits(get_spec("mrpc"), DATA) == ["train", "validation"]
    assert available_splits(get_spec("qnli"), DATA / "QNLI") == ["validation"]


def test_missing_split_file_names_file_and_flag():
    with pytest.raises(TlabError, match=r"dev\.tsv does not exist; point --data-dir"):
        load_glue_split(get_spec("sst2"), DATA, "validation")
    with pytest.raises(TlabError, match=r"no split 'validation' \(splits: train, validation_matched"):
        load_glue_split(get_spec("mnli"), DATA, "validation")


# --- bad files --------------------------------------------------------------------------------------------

def test_unknown_label_names_value_file_and_line(tmp_path):
    write(tmp_path / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    with pytest.raises(TlabError, match=r"unknown label 'maybe' in .*train\.tsv line 3; expected one of entailment"):
        load_glue_split(get_spec("rte"), tmp_path, "train")


def test_missing_column_is_named(tmp_path):
    write(tmp_path / "train.tsv", "text\tlabel\nfine\t1\n")
    with pytest.raises(TlabError, match=r"lacks column\(s\) 'sentence'; it has: 'text', 'label'"):
        load_glue_split(get_spec("sst2"), tmp_path, "train")
    write(tmp_path / "dev.tsv", "sentence\tlabel\n")  # a header but no rows
    with pytest.raises(TlabError, match="is empty"):
        load_glue_split(get_spec("sst2"), tmp_path, "validation")


@pytest.mark.parametrize("content", ["", "\n\n", "\ufeff"])
def test_empty_file(tmp_path, content):
    write(tmp_path / "train.tsv", content)
    with pytest.raises(TlabError, match=r"train\.tsv is empty"):
        load_glue_split(get_spec("sst2"), tmp_path, "train")


def test_wrong_field_count_reports_line(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\n")
    with pytest.raises(TlabError, match=r"train\.tsv line 3 has 3 tab-separated fields, expected 2"):
        load_glue_split(get_spec("sst2"), tmp_path, "train")


def test_non_utf8_file(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(TlabError, match="is not UTF-8"):
        load_glue_split(get_spec("sst2"), tmp_path, "train")


def test_blank_lines_and_crlf_are_tolerated(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\r\n\r\nfine \t1\r\n\n\t0\nbad\t0")
    ds = load_glue_split(get_spec("sst2"), tmp_path, "train")
    assert ds[:] == {"text_a": ["fine ", "", "bad"], "label": [1, 0, 0]}  # an empty sentence is data, not blank


# --- official layouts not present locally, and unlabeled test files ---------------------------------------

def test_mnli_layout(tmp_path):
    cols = "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse " \
           "sentence2_parse sentence1 sentence2".split()
    def row(i, lab):
        return "\t".join([str(i), "1", "2", "fiction", "(", "(", "(", "(", f"p{i}", f"h{i}"] + lab)

    write(tmp_path / "MNLI" / "train.tsv", "\t".join(cols + ["label1", "gold_label"]) + "\n" +
          "\n".join(row(i, [lab, lab]) for i, lab in enumerate(["entailment", "neutral", "contradiction"])) + "\n")
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", "\t".join(cols + [f"label{k}" for k in range(1, 6)] +
          ["gold_label"]) + "\n" + row(0, ["neutral"] * 6) + "\n")
    write(tmp_path / "MNLI" / "test_matched.tsv", "\t".join(cols) + "\n" + row(0, []) + "\n")
    spec = get_spec("mnli")
    assert available_splits(spec, tmp_path) == ["train", "validation_mismatched", "test_matched"]
    assert load_glue_split(spec, tmp_path, "train")[:] == {
        "text_a": ["p0", "p1", "p2"], "text_b": ["h0", "h1", "h2"], "label": [0, 1, 2]}
    assert load_glue_split(spec, tmp_path, "validation_mismatched")["label"] == [1]
    assert load_glue_split(spec, tmp_path, "test_matched")["label"] == [-1]


def test_qqp_layout(tmp_path):
    write(tmp_path / "QQP" / "train.tsv", 'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n'
          '0\t1\t2\tWhat is "x"?\tWhat\'s x?\t1\n1\t3\t4\tA?\tB?\t0\n')
    ds = load_glue_split(get_spec("qqp"), tmp_path, "train")
    assert ds[0] == {"text_a": 'What is "x"?', "text_b": "What's x?", "label": 1}


def test_test_files_without_labels(tmp_path):
    write(tmp_path / "SST-2" / "test.tsv", "index\tsentence\n0\tuneasy mishmash of styles \n")
    write(tmp_path / "STS-B" / "test.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
          "sentence1\tsentence2\n0\tg\tf\t2012\t1\tnone\tnone\tA girl.\tA boy.\n")
    write(tmp_path / "CoLA" / "test.tsv", "index\tsentence\n0\tBill whistled past the house.\n")
    sst2 = load_glue_split(get_spec("sst2"), tmp_path, "test")
    assert sst2[:] == {"text_a": ["uneasy mishmash of styles "], "label": [-1]}
    stsb = load_glue_split(get_spec("stsb"), tmp_path, "test")
    assert stsb.features["label"] == datasets.Value("float32") and stsb["label"] == [-1.0]
    assert load_glue_split(get_spec("cola"), tmp_path, "test")[0]["text_a"] == "Bill whistled past the house."
    write(tmp_path / "SST-2" / "train.tsv", "index\tsentence\n0\tno labels here\n")  # training data must have them
    with pytest.raises(TlabError, match="lacks column.*'label'"):
        load_glue_split(get_spec("sst2"), tmp_path, "train")


# --- the Hub ----------------------------------------------------------------------------------------------

def test_hub_offline_points_to_data_dir():
    with pytest.raises(TlabError, match=r"Hub cannot be reached.*--data-dir DIR"):
        load_glue_hub(get_spec("rte"), "train")


def test_hub_columns_are_renamed(monkeypatch):
    def fake_load_dataset(path, name, split):
        assert (path, name, split) == ("nyu-mll/glue", "mnli", "validation_matched")
        features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                                      "idx": datasets.Value("int32")})
        return datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [0]},
                                          features=features)
    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    ds = load_glue_hub(get_spec("mnli"), "validation_matched")
    assert ds[:] == {"text_a": ["p"], "text_b": ["h"], "label": [2]}
    assert ds.features == load_glue_split(get_spec("rte"), DATA, "train").features


# --- users' own files -------------------------------------------------------------------------------------

def test_custom_csv_names_and_indices(tmp_path):
    path = write(tmp_path / "train.csv", 'review,stars,extra\n"good, really ""great""",positive,x\n'
                 '"two\nlines",0,y\n\n  plain ,1,z\n')
    ds = load_custom_file(path, "review", None, "stars", ("negative", "positive"))
    assert ds[:] == {"text_a": ['good, really "great"', "two\nlines", "  plain "], "label": [1, 0, 1]}
    assert ds.features["label"] == datasets.Value("int64")


def test_custom_jsonl_and_json(tmp_path):
    rows = [{"premise": "a", "hypothesis": "b", "y": "contradiction"}, {"premise": "c", "hypothesis": "d", "y": 1}]
    jsonl = write(tmp_path / "dev.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    spec = get_spec("mnli")
    ds = load_custom_file(jsonl, "premise", "hypothesis", "y", spec.label_names)
    assert ds[:] == {"text_a": ["a", "c"], "text_b": ["b", "d"], "label": [2, 1]}
    as_list = write(tmp_path / "dev.json", json.dumps({"data": rows}))
    assert load_custom_file(as_list, "premise", "hypothesis", "y", spec.label_names)[:] == ds[:]


def test_custom_regression_and_unlabeled(tmp_path):
    path = write(tmp_path / "sts.tsv", 's1\ts2\tscore\nA "dog".\tA cat.\t3.5\n')
    ds = load_custom_file(path, "s1", "s2", "score", None)
    assert ds.features["label"] == datasets.Value("float32") and ds[0]["label"] == 3.5
    assert ds[0]["text_a"] == 'A "dog".'
    path = write(tmp_path / "predict.jsonl", '{"text": "hello"}\n')
    assert load_custom_file(path, "text", None, "label", ("a", "b"), require_label=False)["label"] == [-1]


def test_custom_file_errors(tmp_path):
    names = ("negative", "positive")
    with pytest.raises(TlabError, match=r"data file .*missing\.csv does not exist"):
        load_custom_file(tmp_path / "missing.csv", "text", None, "label", names)
    with pytest.raises(TlabError, match=r"use a \.csv, \.tsv, \.json or \.jsonl file"):
        load_custom_file(write(tmp_path / "data.parquet", "x"), "text", None, "label", names)
    with pytest.raises(TlabError, match=r"train\.csv is empty"):
        load_custom_file(write(tmp_path / "train.csv", ""), "text", None, "label", names)
    bad = write(tmp_path / "bad.csv", "text,label\nok,positive\nhm,meh\n")
    with pytest.raises(TlabError, match=r"unknown label 'meh' in .*bad\.csv line 3; expected one of 0, 1, negative"):
        load_custom_file(bad, "text", None, "label", names)
    with pytest.raises(TlabError, match=r"lacks column\(s\) 'sentence', 'y'; it has: 'text', 'label'"):
        load_custom_file(bad, "sentence", None, "y", names)
    with pytest.raises(TlabError, match=r"line 2 is not valid JSON"):
        load_custom_file(write(tmp_path / "x.jsonl", '{"text": "a", "label": 1}\n{oops\n'), "text", None, "label",
                         names)
    with pytest.raises(TlabError, match=r"line 1: column 'text' holds None, not text"):
        load_custom_file(write(tmp_path / "n.jsonl", '{"text": null, "label": 1}\n'), "text", None, "label", names)
    with pytest.raises(TlabError, match=r"label 'high' in .*s\.csv line 2 is not a number"):
        load_custom_file(write(tmp_path / "s.csv", "text,score\na,high\n"), "text", None, "score", None)


def test_both_orders_adds_each_pair_swapped_with_its_label_and_refuses_single_texts():
    from tlab.tasks import glue_data

    pairs = datasets.Dataset.from_dict({"text_a": ["a1", "a2"], "text_b": ["b1", "b2"], "label": [4.5, 0.2]})
    both = glue_data.in_both_orders(pairs)
    assert list(zip(both["text_a"], both["text_b"], both["label"])) == [
        ("a1", "b1", 4.5), ("a2", "b2", 0.2), ("b1", "a1", 4.5), ("b2", "a2", 0.2)]
    assert both.features == pairs.features
    single = datasets.Dataset.from_dict({"text_a": ["x"], "label": [1]})
    with pytest.raises(TlabError, match="data.both_orders needs sentence pairs"):
        glue_data.in_both_orders(single)
