"""What every TRL-based trainer shares: the common arguments, one progress bar and history, quiet
training, and one result type.

SFT, reward modelling, DPO and GRPO (TRL's ``SFTTrainer``, ``RewardTrainer``, ``DPOTrainer`` and
``GRPOTrainer``) all use the same pieces, in the same straight line::

    runtime.seed_everything(seed)                  # first: building a trainer draws random numbers
    with trainer_dir() as out:                     # a scratch output folder for TRL
        trainer = DPOTrainer(..., args=DPOConfig(**common_args(output_dir=out, ...)))
        result = fit(trainer, policy, desc="DPO", ...)   # train quietly, collect the history
    policy, trainable = finish_policy(trainer, lora_rank)  # DPO and GRPO: unwrap, count, merge LoRA

:func:`common_args` gives the arguments every stage sets the same way, :func:`fit` attaches our
progress bar and history (:class:`History`) and the held-out judge (:class:`Probe`) and trains,
:func:`finish_policy` turns a trained policy back into a plain model, and :class:`TrainResult` is
what comes back.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from labkit import runtime


@dataclass
class TrainResult:
    """What a training run left: its logged losses, wall time and steps."""

    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", ...} per logging step
    seconds: float = 0.0                                # wall time of the training loop
    steps: int = 0                                      # optimiser steps taken
    evaluations: list[dict] = field(default_factory=list)  # {"step", ...} from an eval_fn during training
    eval_seconds: float = 0.0                           # time those evaluations took (inside ``seconds``)


class History(TrainerCallback):
    """Collects the trainer's logged losses, shows one progress bar, and feeds ``callback``.

    Replaces the trainer's own printing (which writes every log dict into the notebook).
    """

    def __init__(self, callback: Callable | None, progress: bool, desc: str,
                 log_keys: Mapping[str, str] | None = None):
        self.history: list[dict] = []
        self.log_keys = dict(log_keys or {})  # the trainer's log name -> our history key
        self.callback = callback
        self.progress = progress
        self.desc = desc
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress:
            self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            point = {"step": state.global_step, "train_loss": float(logs["loss"])}
            point.update({ours: float(logs[theirs]) for theirs, ours in self.log_keys.items() if theirs in logs})
            self.history.append(point)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")
            if self.callback is not None:
                self.callback(self.history)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class Probe(TrainerCallback):
    """Calls ``eval_fn(model) -> dict`` before training and every ``every`` optimiser steps (and after the last).

    The policy trainers use it to judge the policy on held-out prompts while it trains (the same
    judge PPO's loop calls), so every method's curve is measured the same way. The rows go to
    ``evaluations`` (``step`` and each number, named ``heldout_<key>`` as in PPO's) and the time they
    took to ``seconds``.
    """

    def __init__(self, eval_fn: Callable, every: int):
        if every < 1:
            raise ValueError(f"eval_every must be >= 1, got {every}")
        self.eval_fn, self.every = eval_fn, every
        self.evaluations: list[dict] = []
        self.seconds = 0.0

    def _judge(self, step: int, model) -> None:
        start = time.perf_counter()
        self.evaluations.append({"step": step, **{f"heldout_{k}": v for k, v in self.eval_fn(model).items()}})
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._judge(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._judge(state.global_step, model)


def total_steps(n_examples: int, batch_size: int, epochs: float) -> int:
    """Optimiser steps for ``epochs`` passes over ``n_examples`` in batches of ``batch_size`` (>= 1)."""
    return max(1, round(epochs * max(1, -(-n_examples // batch_size))))


def common_args(*, output_dir: str, steps: int, batch_size: int, lr: float, warmup_steps: int,
                seed: int, micro_batches: int = 1) -> dict:
    """Keyword arguments every labkit stage gives a TRL config (``SFTConfig``, ``RewardConfig``, …).

    A linear schedule after warm-up, no weight decay, about 40 logged points per run, nothing saved
    (labkit saves its own checkpoints), no reporting services, our own progress bar, seeded data
    order, no activation checkpointing, 32-bit floats, and the CPU when there is no GPU.

    ``micro_batches``: each step's batch passes through the model in this many equal parts, whose
    gradients add up to the batch's (gradient accumulation). Above 1 the trainer also takes the
    examples in its dataset's order, which :func:`sort_batches_by_length` sets.

    ``batch_size`` is the global batch: under ``accelerate launch --num_processes N`` each process
    takes ``batch_size / N`` examples per step, so a step sees as many examples as with one process.
    """
    processes = runtime.processes()
    if batch_size % processes:
        raise ValueError(f"a batch of {batch_size} examples cannot be shared equally by {processes} processes; "
                         "choose a number of processes that divides it")
    if micro_batches < 1 or batch_size % (processes * micro_batches):
        raise ValueError(f"a batch of {batch_size} examples cannot be cut into {micro_batches} equal micro-batches "
                         f"for each of {processes} process(es); choose micro_batches so that "
                         f"{processes} x micro_batches divides the batch size")
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size // processes // micro_batches,  # the trainer's batch is per process
        gradient_accumulation_steps=micro_batches,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        logging_steps=max(1, steps // 40),
        save_strategy="no",
        report_to="none",
        log_level_replica="passive",    # other processes stay as quiet as the main one (not "warning")
        disable_tqdm=True,              # our own bar (see History) instead of printed log dicts
        # TRL turns on activation (gradient) checkpointing by default: it recomputes activations in
        # the backward pass to save memory (TRL says ~20 % slower). Our models fit easily; same maths.
        gradient_checkpointing=False,
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="sequential" if micro_batches > 1 else "random",
        dataloader_num_workers=0,
        use_cpu=runtime.device().type == "cpu",
        # 32-bit floats. TRL's configs default to bfloat16 autocast, which a CPU without bf16
        # instructions emulates: the reward model trained at 1 step/s instead of 16 (fp32) on this course's
        # 2-core AMD CPU. (A T4, Colab's free GPU, has no bf16 at all.)
        bf16=False,
        fp16=False,
    )


def length_sorted_batches(lengths: list[int], batch_size: int, steps: int, seed: int) -> list[int]:
    """The examples of ``steps`` random batches, each batch's examples sorted by length.

    The batches are those of shuffled epochs (a fresh shuffle each epoch, one after the other, cut
    into batches of ``batch_size``): as random as the trainer's own. Sorting inside a batch changes
    nothing about the step it makes; it lets the trainer cut the batch into micro-batches of about
    equal lengths (see :func:`sort_batches_by_length`).
    """
    rng = torch.Generator().manual_seed(seed)
    stream: list[int] = []
    while len(stream) < steps * batch_size:
        stream.extend(torch.randperm(len(lengths), generator=rng).tolist())
    return [i for start in range(0, steps * batch_size, batch_size)
            for i in sorted(stream[start:start + batch_size], key=lambda i: lengths[i])]


def sort_batches_by_length(trainer, lengths: list[int], batch_size: int, steps: int, seed: int) -> None:
    """Give ``trainer`` (built with ``common_args(..., micro_batches=k)``, k > 1) the examples of
    :func:`length_sorted_batches`, in order; ``lengths[i]`` is the length example ``i`` is padded from.

    The trainer then takes each batch as k micro-batches, the shortest examples first, each padded
    only to its own longest row, and adds up their gradients before the optimiser's step: the step
    of the whole batch (the loss is the mean over the batch's answer tokens, or over its pairs, either
    way), with less padding computed.
    """
    trainer.train_dataset = trainer.train_dataset.select(length_sorted_batches(lengths, batch_size, steps, seed))


@contextmanager
def trainer_dir() -> Iterator[str]:
    """A scratch folder for a TRL trainer's ``output_dir``, deleted when the ``with`` block ends.

    Every TRL config asks for an output folder, but nothing we need lands in it: labkit saves its
    own checkpoints (``save_strategy="no"`` in :func:`common_args`).
    """
    with tempfile.TemporaryDirectory(prefix="labkit-trl-") as out:
        yield out


def fit(trainer, model, *, progress: bool, callback: Callable | None, desc: str,
        log_keys: Mapping[str, str] | None = None, eval_fn: Callable | None = None,
        eval_every: int = 0) -> TrainResult:
    """Train a TRL ``trainer`` that is built and ready, quietly, and return what the run logged.

    Seed the run *before* building the trainer (``runtime.seed_everything(seed)``): building it
    draws random numbers, e.g. the first weights of LoRA adapters. This function only trains.

    The trainer's own printing (a log dict per logged step) is removed; instead the run shows one
    progress bar named ``desc`` and feeds ``callback(history)`` at every logged step (see
    :class:`History`). ``log_keys`` maps more of the trainer's logged numbers into the history
    (e.g. ``{"rewards/margins": "margin"}``; the loss is always kept). With ``eval_fn``,
    ``eval_fn(model)`` runs before training and every ``eval_every`` steps (see :class:`Probe`).
    ``model`` (the model the trainer trains) is left in eval mode.
    """
    recorder = History(callback, progress, desc, log_keys)
    probe = Probe(eval_fn, eval_every) if eval_fn is not None else None
    trainer.remove_callback(PrinterCallback)   # the printing that ``disable_tqdm=True`` puts in the bar's place
    trainer.remove_callback(ProgressCallback)  # the trainer's own bar (there when ``disable_tqdm`` is off)
    # Callbacks run in the order they were added: the history records a step before the probe judges it.
    trainer.add_callback(recorder)
    if probe is not None:
        trainer.add_callback(probe)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(history=recorder.history, seconds=seconds, steps=trainer.state.global_step,
                       evaluations=probe.evaluations if probe else [], eval_seconds=probe.seconds if probe else 0.0)


@dataclass
class PolicyResult(TrainResult):
    """A policy-training run (DPO, GRPO): the :class:`TrainResult` fields, the trained policy (adapters
    merged) and how many parameters were trained."""

    policy: object = None
    trainable_parameters: int = 0


def finish_policy(trainer, lora_rank: int, result: TrainResult, kind: type = PolicyResult) -> PolicyResult:
    """The run's result with the policy the trainer has trained, as a plain model (a ``kind``, e.g. DPOResult).

    What the policy-training stages (DPO, GRPO) share after :func:`fit`: take the trained model out
    of the trainer's wrappers (``accelerate``'s, for several processes), count its trainable
    parameters, and with LoRA (``lora_rank`` >= 1: the trainer wrapped the policy in adapters) merge
    the adapters back in, so the result is a model like the one that went in. It comes back in eval
    mode with gradients on, as every other stage leaves its model.
    """
    from labkit.lora import merge_lora, trainable_parameters

    model = trainer.accelerator.unwrap_model(trainer.model)
    trained = trainable_parameters(model)  # counted before merging: with LoRA, the adapters' parameters
    if lora_rank:
        model = merge_lora(model)
    model.eval().requires_grad_(True)
    return kind(**{f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}, policy=model,
                trainable_parameters=trained)
