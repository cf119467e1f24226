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
    from labkit import checkpoint, pipeline
    from labkit.evaluate import reward_model_fn
    from labkit.metrics import training_state_megabytes
    from labkit.train.ppo import train_ppo
    from labkit.world import preferences as prefs

    preset = get_preset(preset_name)
    device = runtime.device()
    cuda = device.type == "cuda"
    sft, reward = pipeline.ensure("sft", preset, progress=False), pipeline.ensure("reward", preset, progress=False)
    config = dataclasses.replace(preset.ppo, iterations=1, lora_rank=rank)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 1e6
    else:
        if not _reset_peak_rss():
            raise RuntimeError("measuring a step's peak memory on a CPU needs Linux (/proc/self/clear_refs)")
        before = _proc_status_megabytes("VmRSS")
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft, device=device)
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(reward, device=device)
    reference = None if rank else checkpoint.load_checkpoint(sft, device=device)[0]
    result = train_ppo(policy, tokenizer, prefs.alignment_prompts("train"),
                       reward_model_fn(reward_model, reward_tokenizer), config, reference=reference,
                       seed=preset.seed, progress=False)
    peak = torch.cuda.max_memory_allocated() / 1e6 if cuda else _proc_status_megabytes("VmHWM")
    in_memory = result.total_parameters + sum(p.numel() for p in reward_model.parameters())
    return {"rank": rank, "measure": "GPU max_memory_allocated" if cuda else "peak resident memory (RSS)",
            "before_MB": round(before, 1), "peak_MB": round(peak, 1), "added_MB": round(peak - before, 1),
            "trainable_parameters": result.trainable_parameters, "parameters_in_memory": in_memory,
            "state_MB": round(training_state_megabytes(in_memory, result.trainable_parameters), 2)}


def ppo_memory(preset_name: str = "cpu", ranks: tuple[int, ...] = (0, 8)) -> list[dict]:
    """:func:`ppo_step_memory` for each rank, each in a fresh Python process (so peaks don't mix)."""
    import json
    import subprocess
    import sys

    rows = []
    for rank in ranks:
        code = ("import json; from labkit.bench import ppo_step_memory; "
                f"print('RESULT ' + json.dumps(ppo_step_memory({preset_name!r}, {int(rank)})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=900)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            raise RuntimeError(f"the memory measurement for rank {rank} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    return rows
