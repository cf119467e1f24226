"""Measuring a training run's time and memory, and running a measurement in a fresh Python process.

The bench (:mod:`labkit.bench`) measures a short slice of every stage; lab 08's race
(:mod:`labkit.experiments.showdown`) measures whole runs. Both use these helpers, so a stage's
"peak MB" means the same thing in both places:

* :func:`memory_start` resets the peak and returns what is in use now; :func:`memory_row` reads the
  peak after training and reports it beside the computed size of the training state.
* :class:`StepClock` notes when each logged step ended; :func:`timing_row` turns a run's seconds
  into rates that leave out the first step's one-off costs.
* :class:`GenerateClock` splits a run into time spent sampling (``model.generate``) and the rest.
* :func:`in_fresh_process` runs a function in a new interpreter, so peaks don't mix and nothing one
  run loaded or cached helps the next.
"""
from __future__ import annotations

import time

import torch


def sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded to ``digits`` significant figures (a step of a smoke model can take 2 ms)."""
    return None if x is None else float(f"{x:.{digits}g}")


# ------------------------------------------------------------------------------- memory

def proc_status_megabytes(field: str) -> float | None:
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


def memory_start(device) -> float:
    """Reset the peak memory and return what is in use now (MB): GPU tensors, or the CPU's resident memory.

    The process's peak resident memory is reset on a GPU too (where Linux allows), for ``peak_rss_MB``.
    """
    rss_reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 1e6
    if not rss_reset:
        raise RuntimeError("measuring a step's peak memory on a CPU needs Linux (/proc/self/clear_refs)")
    return proc_status_megabytes("VmRSS")


def peak_megabytes(device) -> float | None:
    """The peak since :func:`memory_start`: the most GPU memory allocated, or the peak resident memory (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 1e6
    return proc_status_megabytes("VmHWM")


def memory_row(device, before: float, in_memory: int, trainable: int) -> dict:
    """The memory fields every step measurement reports; ``peak_rss_MB`` is the process's peak resident
    memory on any device, ``cuda_max_allocated_MB`` None off a GPU. ``state_MB`` is computed: every
    weight in memory plus a gradient and AdamW's two moments per trainable one (4 bytes each)."""
    from labkit.metrics import training_state_megabytes

    cuda = device.type == "cuda"
    rss = proc_status_megabytes("VmHWM")
    peak = peak_megabytes(device) if cuda else rss  # on a CPU the line just read
    return {"measure": "GPU max_memory_allocated" if cuda else "peak resident memory (RSS)",
            "before_MB": round(before, 1), "peak_MB": round(peak, 1), "added_MB": round(peak - before, 1),
            "peak_rss_MB": None if rss is None else round(rss, 1),
            "cuda_max_allocated_MB": round(peak, 1) if cuda else None,
            "trainable_parameters": trainable, "parameters_in_memory": in_memory,
            "state_MB": round(training_state_megabytes(in_memory, trainable), 2)}


# ------------------------------------------------------------------------------- time

class StepClock:
    """A training callback that notes when each logged step ended, for the time per step after the first.

    The first step carries one-off costs (lazy set-up, allocator growth); the mean over the later
    steps is the steady rate. The trainers call it once per step at the bench's sizes (GRPO logs
    every step below 50 steps; PPO calls it every iteration).
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


def timing_row(seconds: float, steps: int, clock: StepClock, samples_per_step: int, sample: str,
               tokens_per_step: float | None = None) -> dict:
    """The time fields every step measurement reports, and the rates they give.

    ``seconds`` is the whole training call over ``steps``. The rates ``samples_per_s`` (a sample is
    what ``sample`` names: a conversation, a preference pair, an answer...) and ``tokens_per_s``
    (where the trainer counts its tokens; else None) use the seconds per step after the first
    (:class:`StepClock`), the steady rate, or all steps' mean when only one step was logged.
    """
    after_first = clock.seconds_per_step_after_first()
    per_step = after_first or seconds / steps
    return {"steps": steps, "seconds": sig(seconds), "seconds_per_step": sig(seconds / steps),
            "seconds_per_step_after_first": sig(after_first), "samples_per_step": samples_per_step,
            "sample": sample, "samples_per_s": sig(samples_per_step / per_step),
            "tokens_per_step": sig(tokens_per_step),
            "tokens_per_s": sig(tokens_per_step / per_step) if tokens_per_step else None,
            "threads": torch.get_num_threads()}


class GenerateClock:
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


# ------------------------------------------------------------------------------- fresh processes

def in_fresh_process(function: str, *args, timeout: float = 900, module: str = "labkit.bench"):
    """``<module>.<function>(*args)`` (default module ``labkit.bench``) run in a fresh Python interpreter;
    its JSON result.

    Each measurement gets its own process so that peak memories don't mix and nothing one run
    loaded or cached helps the next. The child inherits the environment (``LABKIT_HOME``,
    ``LABKIT_STAGES``, thread settings). It prints ``RESULT <json>``; a failure raises a
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
