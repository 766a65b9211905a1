"""seqeval: entity-level precision, recall and F1 of tag sequences (CoNLL-2000/2003's conlleval), overall and per
entity type, the strict IOB2 reading beside it, and token accuracy. Flat keys, so `tlab eval --min f1=0.9` and
`--min PER_f1=0.9` gate on them.

The default mode is conlleval's: an I-X that continues no X entity starts one. strict_* (seqeval's mode="strict",
scheme IOB2) counts an entity only when it is well formed (opens with B-X), so ill-formed predictions score less."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from seqeval.metrics import accuracy_score
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

_CITATION = """\
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  note={Software available from https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
@inproceedings{ramshaw-marcus-1995-text,
  title = "Text Chunking using Transformation-Based Learning",
  author = "Ramshaw, Lance and Marcus, Mitch",
  booktitle = "Third Workshop on Very Large Corpora",
  year = "1995",
  url = "https://www.aclweb.org/anthology/W95-0107",
}
"""


def _overall(report: dict) -> dict:
    micro = report["micro avg"]
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"])}


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision, recall and F1 (micro-averaged over entities, as conlleval) of IOB "
                        "tag sequences, per entity type as TYPE_precision/TYPE_recall/TYPE_f1, "
                        "strict_precision/strict_recall/strict_f1 in seqeval's strict IOB2 mode, and accuracy "
                        "(share of tokens tagged right, O included).",
            citation=_CITATION,
            inputs_description="predictions, references: lists of tag sequences (lists of strings such as "
                               "['B-PER', 'I-PER', 'O']), one per sentence, of equal lengths.",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
            reference_urls=["https://github.com/chakki-works/seqeval", "https://www.clips.uantwerpen.be/conll2002/ner/"],
        )

    def _compute(self, predictions, references, zero_division=0):
        predictions = [list(p) for p in predictions]
        references = [list(r) for r in references]
        for number, (p, r) in enumerate(zip(predictions, references), 1):
            if len(p) != len(r):
                raise ValueError(f"sentence {number}: {len(p)} predicted tags for {len(r)} reference tags")
        report = classification_report(references, predictions, output_dict=True, zero_division=zero_division)
        strict = classification_report(references, predictions, output_dict=True, zero_division=zero_division,
                                       mode="strict", scheme=IOB2)
        scores = _overall(report)
        scores.update({f"strict_{k}": v for k, v in _overall(strict).items()})
        scores["accuracy"] = float(accuracy_score(references, predictions))
        for kind, row in report.items():
            if kind.endswith(" avg"):
                continue
            scores[f"{kind}_precision"] = float(row["precision"])
            scores[f"{kind}_recall"] = float(row["recall"])
            scores[f"{kind}_f1"] = float(row["f1-score"])
        return scores
