"""Benchmarks: how fast each stage trains and how much memory it takes, and side-by-side comparisons.

``python -m labkit bench`` (:func:`bench`) runs a short slice of every stage's training (a few
steps of the stage's own trainer, with the preset's model, data and batch), each in a fresh Python
process so that its peak memory is its own, and three comparisons in the same run: our pretraining
loop against a bare PyTorch loop, PPO against GRPO at the same answers per step, and LoRA against
full fine-tuning. Timing goals live here, not in the tests (a busy CI machine would make a timed
test flaky).
"""
from __future__ import annotations

import dataclasses
import math
import sys
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


def _pretrain_rows(preset, steps: int):
    """Enough of the preset's corpus for ``steps`` pretraining steps (+ 2 warm-up steps), without
    generating all of it: ``(data, rows_per_step, tiny_val)``, ``tiny_val`` 8 validation rows."""
    from labkit.pipeline import pretrain_data

    max_len = preset.model.max_len
    rows_per_step = max(1, preset.pretrain.batch_tokens // max_len)
    n_docs = min(preset.n_train_docs, max(500, 2 * (steps + 2) * rows_per_step * max_len // 50))
    data = pretrain_data(preset, n_train=n_docs)
    need = (steps + 2) * rows_per_step
    if len(data.train.input_ids) < need:
        reps = -(-need // len(data.train.input_ids))
        data.train = Packed(data.train.input_ids.repeat(reps, 1), data.train.labels.repeat(reps, 1))
    return data, rows_per_step, Packed(data.val.input_ids[:8], data.val.labels[:8])


def bench_pretrain(preset_name: str = "cpu", steps: int = 30) -> dict:
    """Tokens/s of :func:`labkit.train.pretrain.pretrain` vs a bare PyTorch loop, same model and data.

    Both start from identical weights and see the same number of rows per step; each gets two
    untimed warm-up steps. The ratio ours/bare shows what our extras (schedule, clipping, progress
    bar, logging) cost.
    """
    preset = get_preset(preset_name)
    data, rows_per_step, tiny_val = _pretrain_rows(preset, steps)
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    device = runtime.device()

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


# ------------------------------------------------------------------------------- memory and time

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
    """Reset the peak memory and return what is in use now (MB): GPU tensors, or the CPU's resident memory.

    The process's peak resident memory is reset on a GPU too (where Linux allows), for ``peak_rss_MB``.
    """
    rss_reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 1e6
    if not rss_reset:
        raise RuntimeError("measuring a step's peak memory on a CPU needs Linux (/proc/self/clear_refs)")
    return _proc_status_megabytes("VmRSS")


def _memory_row(device, before: float, in_memory: int, trainable: int) -> dict:
    """The memory fields every step measurement reports (see :func:`ppo_step_memory`); ``peak_rss_MB``
    is the process's peak resident memory on any device, ``cuda_max_allocated_MB`` None off a GPU."""
    from labkit.metrics import training_state_megabytes

    cuda = device.type == "cuda"
    rss = _proc_status_megabytes("VmHWM")
    peak = torch.cuda.max_memory_allocated() / 1e6 if cuda else rss
    return {"measure": "GPU max_memory_allocated" if cuda else "peak resident memory (RSS)",
            "before_MB": round(before, 1), "peak_MB": round(peak, 1), "added_MB": round(peak - before, 1),
            "peak_rss_MB": None if rss is None else round(rss, 1),
            "cuda_max_allocated_MB": round(peak, 1) if cuda else None,
            "trainable_parameters": trainable, "parameters_in_memory": in_memory,
            "state_MB": round(training_state_megabytes(in_memory, trainable), 2)}


def _sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded to ``digits`` significant figures (a step of a smoke model can take 2 ms)."""
    return None if x is None else float(f"{x:.{digits}g}")


class _StepClock:
    """A training callback that notes when each logged step ended, for the time per step after the first.

    The first step carries one-off costs (lazy set-up, allocator growth); the mean over the later
    steps is the steady rate. Both trainers call it once per step at these sizes (GRPO logs every
    step below 50 steps; PPO calls it every iteration).
    """

    def __init__(self, marks: list[tuple[int, float]] | None = None):
        self.marks: list[tuple[int, float]] = list(marks or [])  # (step, seconds), e.g. from a history

    def __call__(self, history: list[dict]) -> None:
        if history and history[-1].get("step"):
            self.marks.append((int(history[-1]["step"]), time.perf_counter()))

    def seconds_per_step_after_first(self) -> float | None:
        if len(self.marks) < 2 or self.marks[-1][0] <= self.marks[0][0]:
            return None
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return (t1 - t0) / (s1 - s0)


def _timing_row(seconds: float, steps: int, clock: _StepClock, samples_per_step: int, sample: str,
                tokens_per_step: float | None = None) -> dict:
    """The time fields every step measurement reports, and the rates they give.

    ``seconds`` is the whole training call over ``steps``. The rates ``samples_per_s`` (a sample is
    what ``sample`` names: a conversation, a preference pair, an answer...) and ``tokens_per_s``
    (where the trainer counts its tokens; else None) use the seconds per step after the first
    (:class:`_StepClock`), the steady rate, or all steps' mean when only one step was logged.
    """
    after_first = clock.seconds_per_step_after_first()
    per_step = after_first or seconds / steps
    return {"steps": steps, "seconds": _sig(seconds), "seconds_per_step": _sig(seconds / steps),
            "seconds_per_step_after_first": _sig(after_first), "samples_per_step": samples_per_step,
            "sample": sample, "samples_per_s": _sig(samples_per_step / per_step),
            "tokens_per_step": _sig(tokens_per_step),
            "tokens_per_s": _sig(tokens_per_step / per_step) if tokens_per_step else None,
            "threads": torch.get_num_threads()}


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
    answers = config.prompts_per_batch * config.samples_per_prompt
    return {"rank": rank, **_memory_row(device, before, in_memory, result.trainable_parameters),
            **_timing_row(result.seconds, iterations, clock, answers, "answer", result.sampled_tokens / iterations),
            "prompts_per_step": config.prompts_per_batch, "samples_per_prompt": config.samples_per_prompt,
            "answers_per_step": answers, "max_new_tokens": config.max_new_tokens,
            "updates_per_step": config.ppo_epochs * -(-answers // config.minibatch_size),
            "rollout_seconds_per_step": _sig(result.rollout_seconds / iterations),
            "rollout_tokens_per_s": _sig(result.sampled_tokens / result.rollout_seconds),
            "update_seconds_per_step": _sig(result.update_seconds / iterations)}


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
    lengths = [h["length"] for h in result.history if "length" in h]
    taken = max(1, result.steps)
    return {"rank": rank, **_memory_row(device, before, in_memory, result.trainable_parameters),
            **_timing_row(result.seconds, taken, clock, answers, "answer",
                          answers * sum(lengths) / len(lengths) if lengths else None),
            "prompts_per_step": config.prompts_per_step, "samples_per_prompt": config.group_size,
            "answers_per_step": answers, "max_new_tokens": config.max_new_tokens, "updates_per_step": 1,
            "rollout_seconds_per_step": _sig(sampling.seconds / taken),
            "other_seconds_per_step": _sig((result.seconds - sampling.seconds) / taken)}


def in_fresh_process(function: str, *args, timeout: float = 900, module: str = "labkit.bench"):
    """``<module>.<function>(*args)`` (default module ``labkit.bench``) run in a fresh Python interpreter;
    its JSON result.

    Each measurement gets its own process so that peak memories don't mix and nothing one run
    loaded or cached helps the next. The child prints ``RESULT <json>``; a failure raises a
    ``RuntimeError`` with the end of its error output.
    """
    import json
    import subprocess
    import sys

    code = (f"import json; from {module} import {function}; "
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


def bench_grpo(preset_name: str = "cpu", steps: int = 5, rank: int = 0, *, measure=None) -> dict:
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
    it keeps in memory) and ``ppo_over_grpo``, PPO's numbers divided by GRPO's. ``measure``: what
    runs a measurement in a fresh process (default :func:`in_fresh_process`; :func:`bench` passes
    one that reuses the rows its stages measured).
    """
    from labkit import pipeline

    measure = measure or in_fresh_process

    preset = get_preset(preset_name)
    grpo_answers = preset.grpo.group_size * preset.grpo.prompts_per_step
    prompts, samples = ppo_batch_like_grpo(preset)
    for stage in ("sft_math", "reward"):     # build inputs here, so the children only load them
        pipeline.ensure(stage, preset, progress=True)
    grpo = measure("grpo_step_memory", preset.name, int(rank), int(steps))
    ppo = measure("ppo_step_speed", preset.name, int(rank), int(steps), prompts, samples)
    grpo["holds"] = models_held("grpo", rank, preset.grpo.beta)
    ppo["holds"] = models_held("ppo", rank)

    def ratio(key):
        return _sig(ppo[key] / grpo[key], 3) if ppo.get(key) and grpo.get(key) else None

    return {"preset": preset.name, "device": str(runtime.device()), "threads": torch.get_num_threads(),
            "lora_rank": rank, "steps": steps, "answers_per_step": grpo_answers, "grpo": grpo, "ppo": ppo,
            "ppo_over_grpo": {key: ratio(key) for key in ("seconds_per_step", "seconds_per_step_after_first",
                                                          "peak_MB", "added_MB", "parameters_in_memory",
                                                          "state_MB", "tokens_per_step")}}


# ------------------------------------------------------------------------------- every stage

def _sft_slice(preset, stage: str, steps: int) -> dict:
    """``steps`` steps of TRL's SFTTrainer as the ``sft`` stage (from ``pretrain``) or the ``sft_math``
    stage (from ``sft``, with the answer marker added) takes them: the stage's batch, learning rate
    and warm-up, its data's first ``steps`` batches."""
    from labkit import checkpoint, pipeline
    from labkit.stages import add_answer_marker, problem_rows, sft_rows
    from labkit.train.sft import train_sft

    if stage == "sft":
        config = dataclasses.replace(preset.sft, train_examples=steps * preset.sft.batch_size, epochs=1)
        rows = sft_rows(preset.replace(sft=config), "train")[:config.train_examples]
        start, sample = "pretrain", "conversation"
    else:
        math_config = preset.sft_math
        rows = problem_rows(preset, "train", steps * math_config.batch_size)
        config = dataclasses.replace(preset.sft, train_examples=len(rows), epochs=1, batch_size=math_config.batch_size,
                                     lr=math_config.lr, warmup_steps=math_config.warmup_steps)
        start, sample = "sft", "word problem"
    device = runtime.device()
    start_dir = pipeline.ensure(start, preset, progress=False)
    before = _memory_start(device)
    model, tokenizer, _ = checkpoint.load_checkpoint(start_dir, device=device)
    if stage == "sft_math":
        add_answer_marker(model, tokenizer, seed=preset.seed)
    model.train()
    clock = _StepClock()
    result = train_sft(model, tokenizer, rows, config, seed=preset.seed, progress=False, callback=clock)
    n = sum(p.numel() for p in model.parameters())
    return {**_memory_row(device, before, n, n),
            **_timing_row(result.seconds, result.steps, clock, config.batch_size, sample)}


def _reward_slice(preset, stage: str, steps: int) -> dict:
    """``steps`` steps of TRL's RewardTrainer from the SFT checkpoint. ``reward_naive`` learns from the
    world's preference pairs; ``reward`` also from comparisons of the SFT policy's own answers, in
    the stage's proportion (sampled here, one answer per training prompt, before the measurement)."""
    from labkit import checkpoint, pipeline
    from labkit.tokenizer import load_tokenizer
    from labkit.train.reward import policy_comparisons, reward_model_from, train_reward
    from labkit.world import preferences as prefs

    config = dataclasses.replace(preset.reward, epochs=1)
    n = steps * config.batch_size
    n_policy = 0 if stage == "reward_naive" else round(n * config.policy_pairs / (config.train_pairs + config.policy_pairs))
    device = runtime.device()
    sft_dir = pipeline.ensure("sft", preset, progress=False)
    pairs = prefs.preference_pairs("train", n - n_policy, seed=preset.world_seed)
    if n_policy:
        sft_model, sft_tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
        few = preset.replace(reward=dataclasses.replace(config, policy_samples=1))
        pairs += policy_comparisons(few, sft_model, sft_tokenizer, "train", n_policy)
        del sft_model
    before = _memory_start(device)
    runtime.seed_everything(preset.seed)
    model, tokenizer = reward_model_from(sft_dir), load_tokenizer(sft_dir)
    clock = _StepClock()
    result = train_reward(model, tokenizer, pairs, config, seed=preset.seed, progress=False, callback=clock)
    n_params = sum(p.numel() for p in model.parameters())
    return {**_memory_row(device, before, n_params, n_params),
            **_timing_row(result.seconds, result.steps, clock, config.batch_size, "preference pair")}


def _dpo_slice(preset, steps: int, rank: int) -> dict:
    """``steps`` steps of TRL's DPOTrainer from the SFT checkpoint: full fine-tuning against a reference
    copy (rank 0), or LoRA adapters whose base with adapters off is the reference."""
    from labkit import checkpoint, pipeline
    from labkit.train.dpo import train_dpo
    from labkit.world import preferences as prefs

    config = dataclasses.replace(preset.dpo, train_pairs=steps * preset.dpo.batch_size, epochs=1, lora_rank=rank)
    pairs = prefs.preference_pairs("train", config.train_pairs, seed=preset.world_seed)
    device = runtime.device()
    sft_dir = pipeline.ensure("sft", preset, progress=False)
    before = _memory_start(device)
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    base = sum(p.numel() for p in policy.parameters())
    reference = None if rank else checkpoint.load_checkpoint(sft_dir, device=device)[0]
    clock = _StepClock()
    result = train_dpo(policy, tokenizer, pairs, config, reference=reference, seed=preset.seed, progress=False,
                       callback=clock)
    in_memory = base + (result.trainable_parameters if rank else base)
    return {**_memory_row(device, before, in_memory, result.trainable_parameters),
            **_timing_row(result.seconds, result.steps, clock, config.batch_size, "preference pair")}


def _pretrain_slice(preset, steps: int) -> dict:
    """``steps`` steps of :func:`labkit.train.pretrain.pretrain` on a fresh model of the preset's size.

    The loop evaluates on 8 rows after every step so that each step's time is logged; those
    evaluations are left out of its clock (as in the stage).
    """
    device = runtime.device()
    data, rows_per_step, tiny_val = _pretrain_rows(preset, steps)
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    cfg = dataclasses.replace(preset.pretrain, steps=steps, eval_every=1, warmup=min(preset.pretrain.warmup, steps))
    before = _memory_start(device)
    model = build_model(config, seed=preset.seed).to(device)
    result = pretrain(model, data.train, tiny_val, cfg, seed=preset.seed, progress=False, train_eval_rows=8)
    clock = _StepClock([(point["step"], point["seconds"]) for point in result.history])
    n = sum(p.numel() for p in model.parameters())
    return {**_memory_row(device, before, n, n),
            **_timing_row(result.seconds, steps, clock, rows_per_step,
                          f"packed row of {preset.model.max_len} tokens", result.tokens_seen / steps)}


LORA_STAGES = ("ppo", "dpo", "grpo")  # the stages whose trainers take a LoRA rank


def stage_rank(preset, stage: str) -> int:
    """The LoRA rank ``stage`` trains with under ``preset`` (0: full fine-tuning, or a stage without LoRA)."""
    return getattr(preset, stage).lora_rank if stage in LORA_STAGES else 0


def stage_step(preset_name: str, stage: str, steps: int, rank: int | None = None) -> dict:
    """Run in a fresh process: ``steps`` optimiser steps of ``stage``'s own trainer; its time and memory.

    A short, representative slice of the stage's training: the preset's model, data and batch, the
    stage's trainer and settings (``rank``: a LoRA rank for ppo, dpo and grpo; default the stage's
    own), its inputs loaded from the cache (:func:`labkit.pipeline.ensure` builds any that are
    missing; nothing is written into a stage's checkpoint), no evaluation. Data are made before the
    peak memory is reset; loading the models and training come after, so ``peak_MB`` and
    ``added_MB`` are theirs (see :func:`ppo_step_memory`). PPO and GRPO are measured by
    :func:`ppo_step_speed` (at the preset's batch) and :func:`grpo_step_memory`.
    """
    preset = get_preset(preset_name)
    rank = stage_rank(preset, stage) if rank is None else int(rank)
    if rank and stage not in LORA_STAGES:
        raise ValueError(f"the {stage!r} stage has no LoRA option; rank must be 0 (LoRA stages: {', '.join(LORA_STAGES)})")
    if stage == "pretrain":
        row = _pretrain_slice(preset, steps)
    elif stage in ("sft", "sft_math"):
        row = _sft_slice(preset, stage, steps)
    elif stage in ("reward", "reward_naive"):
        row = _reward_slice(preset, stage, steps)
    elif stage == "dpo":
        row = _dpo_slice(preset, steps, rank)
    elif stage == "ppo":
        row = _ppo_measure(preset.name, rank, steps, preset.ppo.prompts_per_batch, preset.ppo.samples_per_prompt)
    elif stage == "grpo":
        row = grpo_step_memory(preset.name, rank, steps)
    else:
        raise ValueError(f"no bench slice for stage {stage!r}")
    return {"rank": rank, **row}


def stage_measurement(preset, stage: str, steps: int, rank: int | None = None) -> tuple:
    """The fresh-process call that measures ``stage``: ``(function name, *arguments)`` for :func:`in_fresh_process`.

    PPO and GRPO go straight to :func:`ppo_step_speed` and :func:`grpo_step_memory`, with the
    arguments :func:`bench_grpo` uses, so that a comparison finds the row a stage already measured.
    """
    rank = stage_rank(preset, stage) if rank is None else int(rank)
    if stage == "ppo":
        return ("ppo_step_speed", preset.name, rank, int(steps), preset.ppo.prompts_per_batch,
                preset.ppo.samples_per_prompt)
    if stage == "grpo":
        return "grpo_step_memory", preset.name, rank, int(steps)
    return "stage_step", preset.name, stage, int(steps), rank


class FreshRuns:
    """Runs measurements in fresh processes (:func:`in_fresh_process`), each one once per bench run.

    A comparison asking for a row a stage has measured (the same function and arguments) gets a copy
    of it. Each row gains ``process_seconds``: the child's whole wall time (interpreter start,
    imports, data, loading and training).
    """

    def __init__(self, progress: bool = True):
        self.rows: dict[tuple, dict] = {}
        self.progress = progress

    def __call__(self, function: str, *args) -> dict:
        import copy

        key = (function, *args)
        if key not in self.rows:
            start = time.perf_counter()
            row = in_fresh_process(function, *args)
            row["process_seconds"] = _sig(time.perf_counter() - start, 3)
            self.rows[key] = row
            if self.progress:
                print(f"bench: {function}{tuple(args)!r} took {row['process_seconds']} s in a fresh process",
                      file=sys.stderr, flush=True)
        return copy.deepcopy(self.rows[key])


def _ratio(numerator: dict, denominator: dict, key: str) -> float | None:
    top, bottom = numerator.get(key), denominator.get(key)
    return _sig(top / bottom, 3) if top is not None and bottom else None


def lora_vs_full(preset, stage: str, steps: int, measure) -> dict:
    """``stage`` (ppo or dpo) with full fine-tuning and with LoRA, side by side; ``ratio``: LoRA's
    ``added_MB`` over full fine-tuning's. The rank is the stage's own, or where that is 0 the rank of
    lab 05's memory comparison (``ppo_demos.memory_rank``)."""
    rank = stage_rank(preset, stage) or preset.ppo_demos.memory_rank
    full = measure(*stage_measurement(preset, stage, steps, rank=0))
    lora = measure(*stage_measurement(preset, stage, steps, rank=rank))
    return {"rank": rank, "ratio": _ratio(lora, full, "added_MB"),
            "ratio_is": "LoRA's added_MB / full fine-tuning's: the memory loading the models and training added",
            **{f"{key}_ratio": _ratio(lora, full, key) for key in ("peak_MB", "state_MB", "trainable_parameters",
                                                                    "parameters_in_memory",
                                                                    "seconds_per_step_after_first")},
            "full": full, "lora": lora}


def _without(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def pretrain_vs_bare(preset, steps: int) -> dict:
    """:func:`bench_pretrain` (in this process: it measures speed only); ``ratio``: ours over bare, tokens/s."""
    row = bench_pretrain(preset.name, steps)
    return {"ratio": row["ratio_ours_over_bare"],
            "ratio_is": "tokens/s of labkit's pretraining loop / a bare PyTorch loop's (same model, data, rows per step)",
            **_without(row, "preset", "device")}


def ppo_vs_grpo(preset, steps: int, measure) -> dict:
    """:func:`bench_grpo` at the GRPO stage's LoRA rank; ``ratio``: PPO's seconds per step over GRPO's."""
    row = bench_grpo(preset.name, steps, stage_rank(preset, "grpo"), measure=measure)
    key = "seconds_per_step_after_first" if row["ppo_over_grpo"]["seconds_per_step_after_first"] else "seconds_per_step"
    return {"ratio": row["ppo_over_grpo"][key],
            "ratio_is": f"PPO's {key} / GRPO's, at {row['answers_per_step']} sampled answers per step for both",
            **_without(row, "preset", "device", "threads")}


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(preset) -> dict:
    """Where a bench ran: preset, device, versions, threads, CPU count and the date (UTC)."""
    import datetime
    import os
    import platform

    import transformers
    import trl

    device = runtime.device()
    return {"preset": preset.name, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _finite(value):
    """``value`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


STEPS = 5            # default steps of each stage slice and comparison
PRETRAIN_STEPS = 30  # default steps of each loop in pretrain_vs_bare (short steps: more of them)


def bench(preset_name: str = "cpu", stages: list[str] | None = None, steps: int | None = None, *,
          progress: bool = True) -> dict:
    """``python -m labkit bench``: every stage (or ``stages``) measured, and the comparisons, in one run.

    ``stages[name]`` is :func:`stage_step`'s row for each stage, measured in its own fresh process:
    ``seconds_per_step`` (and ``_after_first``), ``samples_per_s`` (``sample`` names the unit) and
    ``tokens_per_s`` where the trainer counts tokens, ``peak_MB`` / ``added_MB`` / ``peak_rss_MB``
    (and ``cuda_max_allocated_MB`` on a GPU), ``trainable_parameters``. ``comparisons`` holds, for the
    stages asked for: ``pretrain_vs_bare`` (pretrain), ``lora_vs_full`` (ppo, dpo) and ``ppo_vs_grpo``
    (grpo), each with a ``ratio`` and ``ratio_is`` saying what it divides. ``steps`` (default
    :data:`STEPS`; :data:`PRETRAIN_STEPS` for the pretraining loops) is the same for every measurement.
    Missing inputs are trained first (:func:`labkit.pipeline.ensure`), outside the measurements.
    """
    from labkit import pipeline
    from labkit.stages import STAGES

    preset = get_preset(preset_name)
    stages = list(STAGES) if stages is None else list(stages)
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"Unknown stage {stage!r} for bench. Stages: {', '.join(STAGES)} (or none: every stage)")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    each = steps or STEPS
    start = time.perf_counter()
    report = {**environment(preset), "steps": each, "stages": {}, "comparisons": {}}
    needs = {need for stage in stages for need in STAGES[stage].needs} | ({"reward"} if "grpo" in stages else set())
    for stage in (s for s in STAGES if s in needs):   # build the inputs here, so the children only load them
        pipeline.ensure(stage, preset, progress=progress)
    measure = FreshRuns(progress)
    for stage in stages:
        report["stages"][stage] = {"stage": stage, **measure(*stage_measurement(preset, stage, each))}
    comparisons = report["comparisons"]
    if "pretrain" in stages:
        comparisons["pretrain_vs_bare"] = pretrain_vs_bare(preset, steps or PRETRAIN_STEPS)
    if "grpo" in stages:
        comparisons["ppo_vs_grpo"] = ppo_vs_grpo(preset, each, measure)
    lora = {stage: lora_vs_full(preset, stage, each, measure) for stage in ("ppo", "dpo") if stage in stages}
    if lora:
        comparisons["lora_vs_full"] = lora
    report["fresh_processes"] = len(measure.rows)
    report["seconds"] = _sig(time.perf_counter() - start, 3)
    return _finite(report)
