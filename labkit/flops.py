"""Counted compute: the floating-point operations a stage spends, counted from what its models process.

A transformer's cost is almost all matrix products. A token passing through a linear map with an
m×n weight costs 2·m·n operations (a multiply and an add per weight), so one forward pass costs
about 2·N per token for N weights in matrix products, and training about 6·N (the backward pass
costs twice the forward: one product for the gradient of the input, one for the weights). Attention
adds 4·d per layer for every (token, attended position) pair forward (QKᵀ and the weighted sum
of V), twice that backward. That is the accounting of Kaplan et al. (2020) and of PaLM's appendix B
(6·N + 12·L·d·T per trained token).

:func:`counting` applies it to every forward pass that a ``transformers`` model makes inside its
``with`` block: the tokens come from the call's own inputs (padding included: it is computed too),
the context from its key/value cache, the weights from the model's linear layers as they are at that
moment (so a LoRA model's frozen weights cost no weight gradient). A pass whose output is
back-propagated also counts its backward pass, when the gradient reaches it. Sampling, scoring and
evaluation are forward passes only, so they cost 2·N per token::

    with flops.counting() as count:
        train_something()
    count.total, count.training, count.inference

Nothing is estimated by hand: change a recipe and the count follows. What is left out is small at
our sizes: norms, activations, softmax, embeddings' lookups, the optimiser's own arithmetic.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel


@dataclass
class Count:
    """Operations counted inside one :func:`counting` block."""

    forward_trained: float = 0.0  # forward passes that were back-propagated
    backward: float = 0.0         # their backward passes
    inference: float = 0.0        # forward passes never back-propagated (sampling, scoring, evaluation)
    passes: int = 0               # model calls counted
    _pending: dict = field(default_factory=dict, repr=False)  # pass key -> forward cost, until its backward

    @property
    def training(self) -> float:
        return self.forward_trained + self.backward

    @property
    def total(self) -> float:
        return self.training + self.inference + sum(self._pending.values())

    def as_report(self) -> dict:
        """The report's keys: ``flops`` (all), ``flops_training`` and ``flops_inference``."""
        return {"flops": self.total, "flops_training": self.training,
                "flops_inference": self.inference + sum(self._pending.values())}


_active: list[Count] = []
_handle = None


def linear_weights(model: nn.Module) -> list[tuple[nn.Module, int, bool]]:
    """``(module, weights, trainable)`` for every matrix product of ``model``: each ``nn.Linear``, and the
    low-rank matrices of labkit's own :class:`labkit.lora.LoRALinear` (peft's are ``nn.Linear``)."""
    found = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found.append((module, module.weight.numel(), module.weight.requires_grad))
        for name in ("lora_A", "lora_B"):
            param = getattr(module, name, None)
            if isinstance(param, nn.Parameter):
                found.append((module, param.numel(), param.requires_grad))
    return found


def pass_flops(model: nn.Module, tokens: int, rows: int, context: int, head_positions: int) -> tuple[float, float]:
    """``(forward, backward)`` operations of one pass of ``model`` over ``rows`` × ``tokens`` new tokens,
    each attending to ``context`` positions; the output head runs on ``head_positions`` positions (a
    sampler asks for the last position's logits only). The backward pass, if any, costs one product
    per weight for the input's gradient, one more for each trainable weight, and twice attention."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    positions = rows * tokens
    matmul = backward_weights = 0.0
    for module, weights, trainable in linear_weights(model):
        n = head_positions if module is head else positions
        matmul += 2.0 * weights * n
        backward_weights += 2.0 * weights * n if trainable else 0.0
    config = model.config
    layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head_dim
    attention = 4.0 * layers * width * positions * context
    return matmul + attention, matmul + backward_weights + 2 * attention


def _tokens(args, kwargs) -> tuple[int, int] | None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    if ids is None or ids.dim() < 2:
        return None
    return ids.shape[0], ids.shape[1]


def _context(kwargs, output, tokens: int) -> int:
    """Positions each new token attends to: the key/value cache's length after the pass (it now holds
    the new tokens too), else the pass's own length."""
    for cache in (getattr(output, "past_key_values", None), kwargs.get("cache"), kwargs.get("past_key_values")):
        if cache is not None and hasattr(cache, "get_seq_length"):
            return max(tokens, int(cache.get_seq_length()))
    return tokens


_pass_ids = itertools.count()  # a key per back-propagated pass, until its backward comes
_depth = [0]  # how many transformers models' passes are open: only the outermost one counts


def _enter(module, args) -> None:
    if isinstance(module, PreTrainedModel):
        _depth[0] += 1


def _hook(module, args, kwargs, output) -> None:
    """After a pass: count it if it is a whole transformers model's (not a trunk inside one, whose
    work is part of the outer pass, nor a wrapper such as peft's or DDP's around one)."""
    if not isinstance(module, PreTrainedModel):
        return
    _depth[0] -= 1
    if _depth[0] > 0 or not _active or output is None:
        return
    shape = _tokens(args, kwargs)
    if shape is None:
        return
    rows, tokens = shape
    logits = getattr(output, "logits", None)
    # the head's positions: those it returned logits for (a sampler asks for the last only); without
    # logits (transformers' fused head computes the loss chunk by chunk) every position's
    head_positions = logits.shape[:-1].numel() if logits is not None else rows * tokens
    forward, backward = pass_flops(module, tokens, rows, _context(kwargs, output, tokens), head_positions)
    counts = list(_active)
    for count in counts:
        count.passes += 1
    # Whichever of its outputs a loss is made of (logits, a fused loss, log-probabilities), the
    # gradient reaching it means this pass was back-propagated: count that once.
    grads = [t for t in (output.values() if hasattr(output, "values") else ()) if torch.is_tensor(t) and t.requires_grad]
    if torch.is_grad_enabled() and grads:
        key = next(_pass_ids)
        for count in counts:
            count._pending[key] = count._pending.get(key, 0.0) + forward

        def on_backward(grad, key=key):
            if any(key in count._pending for count in counts):
                for count in counts:
                    count.forward_trained += count._pending.pop(key, 0.0)
                    count.backward += backward
            return None
        for tensor in grads:
            tensor.register_hook(on_backward)
    else:
        for count in counts:
            count.inference += forward


def _settle(count: Count) -> None:
    """Passes built for a backward that never came count as forward passes only."""
    count.inference += sum(count._pending.values())
    count._pending.clear()


@contextlib.contextmanager
def counting():
    """Count the operations of every ``transformers`` model pass inside the block (see the module's text).

    Blocks may nest: an inner block's passes count in the outer one too. Under several processes
    (``accelerate launch``) each process counts its own passes; :func:`summed_over_processes` adds them.
    """
    global _handle
    count = Count()
    if _handle is None:
        _depth[0] = 0
        _handle = (nn.modules.module.register_module_forward_pre_hook(_enter),
                   nn.modules.module.register_module_forward_hook(_hook, with_kwargs=True, always_call=True))
    _active.append(count)
    try:
        yield count
    finally:
        _active.remove(count)
        _settle(count)
        if not _active and _handle is not None:
            for handle in _handle:
                handle.remove()
            _handle = None


def summed_over_processes(report: dict) -> dict:
    """``report``'s counts added up over the processes of a data-parallel run (unchanged when alone)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return report
    values = torch.tensor([float(report[k]) for k in report], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    return dict(zip(report, values.tolist()))


def matmul_peak(size: int = 1024, repeats: int = 20, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> dict:
    """The machine's rate on a large matrix product (float32 by default): the best of ``repeats``
    products of two ``size``×``size`` matrices, each 2·size³ operations. The yardstick for a stage's
    utilisation: its counted operations ÷ its seconds ÷ this rate."""
    import time

    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for i in range(repeats + 2):  # two untimed warm-ups
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "device": str(device),
            "threads": torch.get_num_threads(), "flops_per_s": 2.0 * size ** 3 / best}


def compute_table(stages: dict, peak: float | None = None, baseline: dict | None = None) -> dict:
    """The pipeline's compute from its stages' reports (each with ``flops`` and ``seconds``): per stage
    the counted operations, their rate and, given the machine's matrix-product ``peak`` (operations
    per second), the utilisation; summed; and, given the ``baseline`` recipes' stage reports, each
    stage's and the whole pipeline's ratio to them."""
    rows, total, seconds = {}, 0.0, 0.0
    for stage, report in stages.items():
        if report.get("flops") is None:
            continue
        rate = report["flops"] / report["seconds"] if report.get("seconds") else None
        rows[stage] = {"flops": report["flops"], "seconds": report.get("seconds"), "flops_per_s": rate,
                       "utilisation": rate / peak if rate and peak else None}
        if baseline and (baseline.get(stage) or {}).get("flops"):
            rows[stage]["baseline_flops"] = baseline[stage]["flops"]
            rows[stage]["ratio"] = report["flops"] / baseline[stage]["flops"]
        total += report["flops"]
        seconds += report.get("seconds") or 0.0
    table = {"stages": rows, "flops": total, "seconds": seconds, "flops_per_s": total / seconds if seconds else None,
             "utilisation": total / seconds / peak if seconds and peak else None, "matmul_peak": peak}
    if baseline:
        base = sum((row or {}).get("flops") or 0.0 for row in baseline.values())
        table.update(baseline_flops=base, ratio=total / base if base else None)
    return table
