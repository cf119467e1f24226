"""Pretraining from scratch: next-token prediction on the world's corpus.

The loop reads like the textbook version: take a batch of packed documents, predict every next
token, average −log p(correct token), step the optimiser, now and then measure the held-out loss.
Everything else (packing, the learning-rate schedule, evaluation) is a small helper beside it.

``accelerate`` runs the same loop data-parallel: under ``accelerate launch --num_processes N``
each of the N processes (GPUs, or CPU processes talking over gloo) takes its own share of every
step's rows, and the gradients are averaged across processes before the optimiser steps. With one
process ``accelerate`` changes nothing: the same numbers as a plain PyTorch loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from labkit import runtime
from labkit.presets import PretrainConfig
from labkit.train.common import TrainResult
from labkit.train.muon import Muon, muon_matrices

IGNORE = -100  # label value the loss skips (padding and document starts)


@dataclass
class Packed:
    """Documents packed greedily into rows of ``max_len`` tokens, never split across rows."""

    input_ids: torch.Tensor   # (rows, max_len) token ids, padded with pad_id
    labels: torch.Tensor      # (rows, max_len) = input_ids, with IGNORE where nothing is predicted

    @property
    def n_predicted(self) -> int:
        """Number of tokens whose prediction counts in the loss (labels shift inside the model)."""
        return int((self.labels[:, 1:] != IGNORE).sum())


def pack_documents(docs: Sequence[Sequence[int]], max_len: int, pad_id: int) -> Packed:
    """Pack tokenised documents (each ``[<s>, ..., </s>]``) into rows.

    A row is ``<s> doc1 </s> <s> doc2 </s> <pad> ...``. Labels are ``IGNORE`` at each ``<s>``
    (the start of a new document is not predicted from the previous one) and at padding, so the
    loss counts exactly each document's words and its ``</s>``, the same tokens the entropy floor
    counts. A document longer than ``max_len`` raises ``ValueError`` (raise ``ModelSize.max_len``).
    """
    rows: list[list[int]] = []
    starts: list[list[int]] = []
    current: list[int] = []
    current_starts: list[int] = []
    for doc in docs:
        if len(doc) > max_len:
            raise ValueError(f"a document has {len(doc)} tokens, more than max_len={max_len}; "
                             "raise the preset's ModelSize.max_len")
        if len(current) + len(doc) > max_len:
            rows.append(current)
            starts.append(current_starts)
            current, current_starts = [], []
        current_starts.append(len(current))
        current.extend(doc)
    if current:
        rows.append(current)
        starts.append(current_starts)
    input_ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), max_len), IGNORE, dtype=torch.long)
    for r, (row, row_starts) in enumerate(zip(rows, starts)):
        input_ids[r, : len(row)] = torch.tensor(row)
        labels[r, : len(row)] = torch.tensor(row)
        labels[r, row_starts] = IGNORE
    return Packed(input_ids, labels)


def lr_at(step: int, cfg: PretrainConfig, peak: float | None = None) -> float:
    """Linear warm-up to the peak rate (``cfg.lr`` unless ``peak`` is given), then cosine decay to a
    tenth of it at the last step."""
    peak = cfg.lr if peak is None else peak
    if step < cfg.warmup:
        return peak * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def token_losses(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token −ln p(next token), shape (rows, max_len-1); 0 where the label is ignored."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE, reduction="none")
    return loss.view_as(target)


@torch.no_grad()
def evaluate(model, data: Packed, batch_rows: int = 64) -> float:
    """Mean next-token loss (nats/token) over every predicted token of ``data``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data.input_ids), batch_rows):
        ids = data.input_ids[i : i + batch_rows].to(device)
        lab = data.labels[i : i + batch_rows].to(device)
        total += float(token_losses(model, ids, lab).sum())
        count += int((lab[:, 1:] != IGNORE).sum())
    model.train(was_training)
    return total / count


def make_optimizers(model, cfg: PretrainConfig) -> list[torch.optim.Optimizer]:
    """The optimisers of ``cfg.optimizer``. Each group keeps its peak rate in ``group["peak_lr"]``;
    the schedule (:func:`lr_at`) warms up and decays every group alike."""
    if cfg.optimizer == "adamw":
        opts = [torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)]
    else:
        matrices, rest = muon_matrices(model)
        # torch.optim.Muon's rule, in float32 on a CPU (labkit.train.muon says why)
        opts = [Muon(matrices, lr=cfg.muon_lr, weight_decay=cfg.muon_weight_decay),
                torch.optim.AdamW(rest, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)]
    for opt in opts:
        for group in opt.param_groups:
            group["peak_lr"] = group["lr"]
    return opts


# Rows of validation (and of the training probe) that each point of a pretraining curve reads, but
# the last: enough for the curve's shape. Reading every row, the cpu stage's evaluations cost about a
# ninth of its counted compute; reading this many, about a thirtieth (issue 29).
CURVE_ROWS = 64


@dataclass
class PretrainResult(TrainResult):
    """What a pretraining run leaves behind: the curve (one dict per evaluation) and the final numbers."""

    val_loss: float = float("nan")                     # final held-out loss, nats/token
    train_loss: float = float("nan")                   # final loss on the training rows, nats/token
    tokens_seen: int = 0                               # predicted tokens processed in training
    parameters: int = 0                                # model size (set by quick_run)


def pretrain(
    model,
    train: Packed,
    val: Packed,
    cfg: PretrainConfig,
    *,
    seed: int = 0,
    callback: Callable[[list[dict]], None] | None = None,
    progress: bool = True,
    train_eval_rows: int = 256,
    curve_rows: int | None = CURVE_ROWS,
) -> PretrainResult:
    """Train ``model`` on packed ``train`` rows for ``cfg.steps`` steps; evaluate on ``val``.

    ``callback(history)`` is called after each evaluation (the labs use it to redraw live curves).
    The training loss in the history is measured on a fixed sample of training rows with the same
    code as the validation loss, so the two curves are comparable (memorisation shows as a gap).
    Each evaluation before the last reads the first ``curve_rows`` rows of both (``None``: all of
    them): enough for a curve, at a fraction of the arithmetic (the cpu preset's full set is 216
    validation rows and 256 training rows). The last evaluation reads all of them, so the final
    ``val_loss`` and ``train_loss`` are exact. Evaluation never changes the weights or the row order.

    Data parallel (``accelerate launch --num_processes N``): every process draws the same row order
    and takes its own N-th of each step's ``cfg.batch_tokens // max_len`` rows, so a step sees the
    same global batch, and takes the same update (up to float rounding), as one process would.
    Evaluation runs on every process (same weights, same numbers).
    """
    device = next(model.parameters()).device
    # device_placement=False: the model stays where the caller put it (runtime.device() in the pipeline).
    accelerator = Accelerator(cpu=runtime.device().type == "cpu", device_placement=False)
    gen = torch.Generator().manual_seed(seed)  # the same seed in every process: the same row order
    rows_per_step = max(1, cfg.batch_tokens // train.input_ids.size(1))
    if rows_per_step < accelerator.num_processes:
        raise ValueError(f"each step has {rows_per_step} rows, fewer than the {accelerator.num_processes} processes "
                         "sharing it; raise PretrainConfig.batch_tokens or use fewer processes")
    probe = Packed(train.input_ids[:train_eval_rows], train.labels[:train_eval_rows])
    curve_probe, curve_val = probe, val
    if curve_rows is not None:
        curve_probe = Packed(probe.input_ids[:curve_rows], probe.labels[:curve_rows])
        curve_val = Packed(val.input_ids[:curve_rows], val.labels[:curve_rows])
    opts = make_optimizers(model, cfg)
    # With several processes, prepare wraps the model in DistributedDataParallel (it averages the
    # gradients across processes in backward); alone, the model and optimisers work as before.
    ddp_model, *opts = accelerator.prepare(model, *opts)
    result = PretrainResult()
    order = torch.randperm(len(train.input_ids), generator=gen)
    cursor = 0
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pretraining", disable=not progress, unit="step")
    for step in bar:
        if cursor + rows_per_step > len(order):          # new epoch: reshuffle
            order = torch.randperm(len(train.input_ids), generator=gen)
            cursor = 0
        idx = order[cursor : cursor + rows_per_step]
        cursor += rows_per_step
        idx = idx.tensor_split(accelerator.num_processes)[accelerator.process_index]  # this process's share
        ids, lab = train.input_ids[idx].to(device), train.labels[idx].to(device)

        losses = token_losses(ddp_model, ids, lab)        # −log p(correct) per token
        n = accelerator.reduce((lab[:, 1:] != IGNORE).sum(), "sum")  # predicted tokens in the whole step
        # The step's loss is the mean over all n tokens of the step: (sum over every process) / n.
        # DDP averages the processes' gradients (sums them, divides by N), so each process
        # back-propagates N · (its own sum) / n; the average of those is the gradient of the global
        # mean, however the tokens fall between processes. (Its own sum / its own count would
        # weight a process's tokens more when it happens to have fewer.) Alone: sum / n, as before.
        loss = accelerator.num_processes * losses.sum() / n
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(ddp_model.parameters(), 1.0)
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg, group["peak_lr"])
            opt.step()
            opt.zero_grad(set_to_none=True)
        result.tokens_seen += int(n)
        # The step's mean loss over all processes' tokens, for the bar. Every process joins the
        # reduce (a collective), even those that show no bar: one left out would wait forever.
        step_loss = accelerator.reduce(losses.detach().sum(), "sum") / n
        bar.set_postfix(loss=f"{float(step_loss):.3f}")

        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - start
            final = step + 1 == cfg.steps
            point = {"step": step + 1, "tokens": result.tokens_seen, "seconds": elapsed,
                     "train_loss": evaluate(model, probe if final else curve_probe),
                     "val_loss": evaluate(model, val if final else curve_val)}
            result.history.append(point)
            if callback is not None:
                callback(result.history)
            start = time.perf_counter() - elapsed  # don't count evaluation time as training time
    bar.close()
    last = result.history[-1]
    result.val_loss, result.train_loss = last["val_loss"], last["train_loss"]
    result.seconds = last["seconds"]
    result.steps = cfg.steps
    return result
