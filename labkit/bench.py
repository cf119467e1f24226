"""Benchmarks: how fast our code runs compared with the plainest possible version.

Timing goals live here, not in the tests (a busy CI machine would make a timed test flaky).
"""
from __future__ import annotations

import dataclasses
import time

import torch

from labkit import runtime
from labkit.models import build_model, config_from_size
from labkit.presets import get_preset
from labkit.train.pretrain import IGNORE, Packed, pretrain


def _bare_loop(model, data: Packed, rows_per_step: int, steps: int, lr: float) -> tuple[int, float]:
    """The textbook loop: forward with labels, backward, step. Returns (tokens, seconds)."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        sl = slice(step * rows_per_step, (step + 1) * rows_per_step)
        ids, lab = data.input_ids[sl].to(device), data.labels[sl].to(device)
        loss = model(input_ids=ids, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((lab[:, 1:] != IGNORE).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - start


def bench_pretrain(preset_name: str = "cpu", steps: int = 30) -> dict:
    """Tokens/s of :func:`labkit.train.pretrain.pretrain` vs a bare PyTorch loop, same model and data.

    Both start from identical weights and see the same number of rows per step; each gets two
    untimed warm-up steps. The ratio ours/bare shows what our extras (schedule, clipping, progress
    bar, logging) cost.
    """
    from labkit.pipeline import pretrain_data

    preset = get_preset(preset_name)
    max_len = preset.model.max_len
    rows_per_step = max(1, preset.pretrain.batch_tokens // max_len)
    n_docs = min(preset.n_train_docs, max(500, 2 * (steps + 2) * rows_per_step * max_len // 50))
    data = pretrain_data(preset, n_train=n_docs)
    need = (steps + 2) * rows_per_step
    if len(data.train.input_ids) < need:
        reps = -(-need // len(data.train.input_ids))
        data.train = Packed(data.train.input_ids.repeat(reps, 1), data.train.labels.repeat(reps, 1))
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    device = runtime.device()
    tiny_val = Packed(data.val.input_ids[:8], data.val.labels[:8])

    bare_model = build_model(config, seed=0).to(device)
    _bare_loop(bare_model, data.train, rows_per_step, 2, preset.pretrain.lr)   # warm-up
    bare_tokens, bare_seconds = _bare_loop(bare_model, data.train, rows_per_step, steps, preset.pretrain.lr)

    ours_model = build_model(config, seed=0).to(device)
    warm = dataclasses.replace(preset.pretrain, steps=2, eval_every=2, warmup=0)
    pretrain(ours_model, data.train, tiny_val, warm, progress=False)
    cfg = dataclasses.replace(preset.pretrain, steps=steps, eval_every=steps, warmup=min(preset.pretrain.warmup, steps))
    result = pretrain(ours_model, data.train, tiny_val, cfg, progress=True)

    ours = result.tokens_seen / result.seconds
    bare = bare_tokens / bare_seconds
    return {
        "preset": preset.name, "device": str(device), "threads": torch.get_num_threads(),
        "steps": steps, "tokens_per_step": bare_tokens // steps,
        "ours_tokens_per_s": round(ours, 1), "bare_tokens_per_s": round(bare, 1),
        "ratio_ours_over_bare": round(ours / bare, 3),
    }


# ------------------------------------------------------------------------------- PPO

def bench_ppo(preset_name: str = "cpu", iterations: int = 5, rank: int = 0) -> dict:
    """Rollout tokens/s and seconds per PPO iteration (sampling vs update), from the cached SFT and
    reward stages (built first if missing). ``rank`` 0 = full fine-tuning, else LoRA."""
    from labkit import pipeline
    from labkit.stages import run_ppo

    preset = get_preset(preset_name)
    config = dataclasses.replace(preset.ppo, iterations=iterations, eval_every=iterations + 1, lora_rank=rank,
                                 final_eval_samples=1)
    result = run_ppo(preset, pipeline.ensure("sft", preset), pipeline.ensure("reward", preset), config,
                     progress=True)["result"]
    return {"preset": preset.name, "device": str(runtime.device()), "threads": torch.get_num_threads(),
            "lora_rank": rank, "iterations": iterations,
            "answers_per_iteration": config.prompts_per_batch * config.samples_per_prompt,
            "rollout_tokens_per_s": round(result.sampled_tokens / result.rollout_seconds, 1),
            "rollout_seconds_per_iteration": round(result.rollout_seconds / iterations, 3),
            "update_seconds_per_iteration": round(result.update_seconds / iterations, 3),
            "seconds_per_iteration": round(result.seconds / iterations, 3)}


def _proc_status_megabytes(field: str) -> float | None:
    """A memory line of /proc/self/status (``VmRSS``: now, ``VmHWM``: the peak) in MB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1e3  # kB
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (Linux: write 5 to /proc/self/clear_refs); True if done."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _memory_start(device) -> float:
    """Reset the peak memory and return what is in use now (MB): GPU tensors, or the CPU's resident memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 1e6
    if not _reset_peak_rss():
        raise RuntimeError("measuring a step's peak memory on a CPU needs Linux (/proc/self/clear_refs)")
    return _proc_status_megabytes("VmRSS")


def _memory_row(device, before: float, in_memory: int, trainable: int) -> dict:
    """The memory fields every step measurement reports (see :func:`ppo_step_memory`)."""
    from labkit.metrics import training_state_megabytes

    cuda = device.type == "cuda"
    peak = torch.cuda.max_memory_allocated() / 1e6 if cuda else _proc_status_megabytes("VmHWM")
    return {"measure": "GPU max_memory_allocated" if cuda else "peak resident memory (RSS)",
            "before_MB": round(before, 1), "peak_MB": round(peak, 1), "added_MB": round(peak - before, 1),
            "trainable_parameters": trainable, "parameters_in_memory": in_memory,
            "state_MB": round(training_state_megabytes(in_memory, trainable), 2)}


class _StepClock:
    """A training callback that notes when each logged step ended, for the time per step after the first.

    The first step carries one-off costs (lazy set-up, allocator growth); the mean over the later
    steps is the steady rate. Both trainers call it once per step at these sizes (GRPO logs every
    step below 50 steps; PPO calls it every iteration).
    """

    def __init__(self):
        self.marks: list[tuple[int, float]] = []

    def __call__(self, history: list[dict]) -> None:
        if history and history[-1].get("step"):
            self.marks.append((int(history[-1]["step"]), time.perf_counter()))

    def seconds_per_step_after_first(self) -> float | None:
        if len(self.marks) < 2 or self.marks[-1][0] <= self.marks[0][0]:
            return None
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return round((t1 - t0) / (s1 - s0), 3)


class _GenerateClock:
    """Within ``with``: the seconds ``model.generate`` took (all calls), timed by a wrapper on the instance.

    TRL's GRPOTrainer samples with the model's ``generate`` (through PEFT's wrapper with LoRA, which
    calls the same object's), so this splits a GRPO step into sampling and the rest.
    """

    def __init__(self, model):
        self.model, self.seconds = model, 0.0

    def __enter__(self):
        generate = self.model.generate

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        self.model.generate = timed  # an instance attribute, found before the class's method
        return self

    def __exit__(self, *exc):
        del self.model.generate


def _ppo_measure(preset_name: str, rank: int, iterations: int = 1, prompts: int | None = None,
                 samples: int | None = None) -> dict:
    """Load PPO's models, take ``iterations`` PPO iterations of ``prompts`` x ``samples`` answers
    (default the preset's); the memory fields of :func:`ppo_step_memory` plus the time per iteration."""
    from labkit import checkpoint, pipeline
    from labkit.evaluate import reward_model_fn
    from labkit.train.ppo import train_ppo
    from labkit.world import preferences as prefs

    preset = get_preset(preset_name)
    device = runtime.device()
    sft, reward = pipeline.ensure("sft", preset, progress=False), pipeline.ensure("reward", preset, progress=False)
    config = dataclasses.replace(preset.ppo, iterations=iterations, lora_rank=rank,
                                 prompts_per_batch=prompts or preset.ppo.prompts_per_batch,
                                 samples_per_prompt=samples or preset.ppo.samples_per_prompt)
    before = _memory_start(device)
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft, device=device)
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(reward, device=device)
    reference = None if rank else checkpoint.load_checkpoint(sft, device=device)[0]
    clock = _StepClock()
    result = train_ppo(policy, tokenizer, prefs.alignment_prompts("train"),
                       reward_model_fn(reward_model, reward_tokenizer), config, reference=reference,
                       seed=preset.seed, progress=False, callback=clock)
    in_memory = result.total_parameters + sum(p.numel() for p in reward_model.parameters())
    row = {"rank": rank, **_memory_row(device, before, in_memory, result.trainable_parameters)}
    minibatches = -(-config.prompts_per_batch * config.samples_per_prompt // config.minibatch_size)
    return {**row, "steps": iterations, "prompts_per_step": config.prompts_per_batch,
            "samples_per_prompt": config.samples_per_prompt,
            "answers_per_step": config.prompts_per_batch * config.samples_per_prompt,
            "max_new_tokens": config.max_new_tokens,
            "tokens_per_step": round(result.sampled_tokens / iterations, 1),
            "updates_per_step": config.ppo_epochs * minibatches,
            "seconds_per_step": round(result.seconds / iterations, 3),
            "seconds_per_step_after_first": clock.seconds_per_step_after_first(),
            "rollout_seconds_per_step": round(result.rollout_seconds / iterations, 3),
            "update_seconds_per_step": round(result.update_seconds / iterations, 3)}


MEMORY_FIELDS = ("rank", "measure", "before_MB", "peak_MB", "added_MB", "trainable_parameters",
                 "parameters_in_memory", "state_MB")


def ppo_step_memory(preset_name: str, rank: int) -> dict:
    """Run in a fresh process: load PPO's models and take one PPO iteration; report memory.

    The models are the policy with its value head, the reference (a second copy with full
    fine-tuning; the same base with adapters off with LoRA) and the reward model; nothing else is
    loaded (no evaluation). CPU (Linux): the peak resident memory is reset just before loading, so
    ``peak_MB`` is the highest the process reached while loading them and taking the step, and
    ``added_MB`` what that added to Python, torch and transformers alone (``before_MB``). GPU:
    ``torch.cuda.max_memory_allocated`` (tensors only). ``state_MB`` is computed: every weight in
    memory plus a gradient and AdamW's two moments per trainable one (4 bytes each).
    """
    row = _ppo_measure(preset_name, rank)
    return {k: row[k] for k in MEMORY_FIELDS}


def ppo_step_speed(preset_name: str, rank: int, steps: int = 3, prompts: int | None = None,
                   samples: int | None = None) -> dict:
    """Run in a fresh process: :func:`ppo_step_memory` over ``steps`` PPO iterations of ``prompts``
    x ``samples`` answers each (default the preset's), plus the time per iteration (sampling and
    update apart), the answer tokens sampled and the gradient steps per iteration."""
    return _ppo_measure(preset_name, rank, steps, prompts, samples)


def ppo_batch_like_grpo(preset) -> tuple[int, int]:
    """PPO's (prompts, samples per prompt) giving as many answers per step as the preset's GRPO.

    PPO keeps its own samples per prompt where they divide GRPO's answers (the cpu preset: 128 =
    32 prompts x 4), else takes GRPO's shape (prompts_per_step x group_size).
    """
    answers = preset.grpo.group_size * preset.grpo.prompts_per_step
    samples = preset.ppo.samples_per_prompt
    if answers % samples:
        samples = preset.grpo.group_size
    return answers // samples, samples


def grpo_step_memory(preset_name: str, rank: int, steps: int = 3) -> dict:
    """Run in a fresh process: load the ``sft_math`` policy and take ``steps`` GRPO steps; report
    memory and time, the twin of :func:`ppo_step_memory`.

    GRPO holds one model: the policy (no value head; the rule reward
    :func:`labkit.rewards.correctness_reward` is no model; with β = 0, the preset's, no reference).
    The prompts are training word problems after the sft_math demonstrations', as in the ``grpo``
    stage; the config is the preset's with ``lora_rank=rank``. Memory as in :func:`ppo_step_memory`;
    ``seconds_per_step`` is the whole run over ``steps``, ``seconds_per_step_after_first`` leaves out
    the first step's one-off costs; ``rollout_seconds_per_step`` is the time in ``generate`` (PPO's
    rollout is its sampling too), ``other_seconds_per_step`` the rest: scoring, log-probs, the
    gradient step and the trainer's own set-up and bookkeeping. ``tokens_per_step``: the mean answer
    length TRL logged times the answers per step.
    """
    from labkit import checkpoint, pipeline
    from labkit.rewards import correctness_reward
    from labkit.train.grpo import train_grpo
    from labkit.world import problems as word_problems

    preset = get_preset(preset_name)
    device = runtime.device()
    start_dir = pipeline.ensure("sft_math", preset, progress=False)
    config = dataclasses.replace(preset.grpo, steps=steps, lora_rank=rank,
                                 warmup_steps=min(preset.grpo.warmup_steps, steps))
    answers = config.group_size * config.prompts_per_step
    rows = word_problems.problems("train", steps * config.prompts_per_step, seed=preset.world_seed,
                                  start=preset.sft_math.train_problems)
    before = _memory_start(device)
    policy, tokenizer, _ = checkpoint.load_checkpoint(start_dir, device=device)
    base = sum(p.numel() for p in policy.parameters())
    clock = _StepClock()
    with _GenerateClock(policy) as sampling:
        result = train_grpo(policy, tokenizer, rows, [correctness_reward], config, seed=preset.seed, progress=False,
                            callback=clock)
    reference = base if config.beta > 0 and not rank else 0   # TRL loads a reference copy only then
    in_memory = base + (result.trainable_parameters if rank else 0) + reference
    row = {"rank": rank, **_memory_row(device, before, in_memory, result.trainable_parameters)}
    lengths = [h["length"] for h in result.history if "length" in h]
    return {**row, "steps": result.steps, "prompts_per_step": config.prompts_per_step,
            "samples_per_prompt": config.group_size, "answers_per_step": answers,
            "max_new_tokens": config.max_new_tokens,
            "tokens_per_step": round(answers * sum(lengths) / len(lengths), 1) if lengths else None,
            "updates_per_step": 1,
            "seconds_per_step": round(result.seconds / max(1, result.steps), 3),
            "seconds_per_step_after_first": clock.seconds_per_step_after_first(),
            "rollout_seconds_per_step": round(sampling.seconds / max(1, result.steps), 3),
            "other_seconds_per_step": round((result.seconds - sampling.seconds) / max(1, result.steps), 3)}


def in_fresh_process(function: str, *args, timeout: float = 900):
    """``labkit.bench.<function>(*args)`` run in a fresh Python interpreter; its JSON result.

    Each measurement gets its own process so that peak memories don't mix and nothing one run
    loaded or cached helps the next. The child prints ``RESULT <json>``; a failure raises a
    ``RuntimeError`` with the end of its error output.
    """
    import json
    import subprocess
    import sys

    code = (f"import json; from labkit.bench import {function}; "
            f"print('RESULT ' + json.dumps({function}(*{tuple(args)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{function}{tuple(args)!r} failed in its fresh process:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def ppo_memory(preset_name: str = "cpu", ranks: tuple[int, ...] = (0, 8)) -> list[dict]:
    """:func:`ppo_step_memory` for each rank, each in a fresh Python process (so peaks don't mix)."""
    return [in_fresh_process("ppo_step_memory", preset_name, int(rank)) for rank in ranks]


# ------------------------------------------------------------------------------- GRPO vs PPO

def models_held(method: str, rank: int, beta: float = 0.0) -> str:
    """What a ``"grpo"`` or ``"ppo"`` step holds in memory, in words, at LoRA ``rank`` (0 = full)."""
    if method == "grpo":
        reference = ("no reference (beta 0)" if not beta else
                     "the reference as the base with adapters off" if rank else "a reference copy (beta > 0)")
        return (f"the policy only{' (a frozen base with LoRA adapters)' if rank else ''}: no value head, "
                f"no reward model (the reward is a rule), {reference}")
    if rank:
        return ("one frozen base serving as policy (adapters on), reference (adapters off) and value trunk, "
                "the value head, and the reward model")
    return "the policy with its value head, a reference copy of the SFT policy, and the reward model"


def bench_grpo(preset_name: str = "cpu", steps: int = 5, rank: int = 0) -> dict:
    """GRPO against PPO at the same batch: seconds per step and peak memory, each in a fresh process.

    "The same batch" is the same number of sampled answers per step: PPO's prompts x samples equals
    GRPO's prompts_per_step x group_size (:func:`ppo_batch_like_grpo`; the cpu preset: PPO 32 x 4 =
    128 = GRPO 16 prompts x 8), PPO's other settings kept. The two still differ in what a step is:
    GRPO samples once and takes one gradient step; PPO also scores with a reward model, runs the
    reference and takes ppo_epochs x minibatches gradient steps (``updates_per_step``); and PPO's
    answers are shorter (``max_new_tokens``), hence ``tokens_per_step``. Both start from their
    stage's inputs (``sft_math`` for GRPO; ``sft`` and ``reward`` for PPO), built here first if
    missing. ``rank`` 0 = full fine-tuning for both, else LoRA of that rank for both. Returns one
    dict per method (:func:`grpo_step_memory`, :func:`ppo_step_speed`, each with ``holds``: what
    it keeps in memory) and ``ppo_over_grpo``, PPO's numbers divided by GRPO's.
    """
    from labkit import pipeline

    preset = get_preset(preset_name)
    grpo_answers = preset.grpo.group_size * preset.grpo.prompts_per_step
    prompts, samples = ppo_batch_like_grpo(preset)
    for stage in ("sft_math", "reward"):     # build inputs here, so the children only load them
        pipeline.ensure(stage, preset, progress=True)
    grpo = in_fresh_process("grpo_step_memory", preset.name, int(rank), int(steps))
    ppo = in_fresh_process("ppo_step_speed", preset.name, int(rank), int(steps), prompts, samples)
    grpo["holds"] = models_held("grpo", rank, preset.grpo.beta)
    ppo["holds"] = models_held("ppo", rank)

    def ratio(key):
        return round(ppo[key] / grpo[key], 2) if ppo.get(key) and grpo.get(key) else None

    return {"preset": preset.name, "device": str(runtime.device()), "threads": torch.get_num_threads(),
            "lora_rank": rank, "steps": steps, "answers_per_step": grpo_answers, "grpo": grpo, "ppo": ppo,
            "ppo_over_grpo": {key: ratio(key) for key in ("seconds_per_step", "seconds_per_step_after_first",
                                                          "peak_MB", "added_MB", "parameters_in_memory",
                                                          "state_MB", "tokens_per_step")}}
