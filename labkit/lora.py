"""LoRA: fine-tune a big matrix through two thin ones. First from scratch, then with ``peft``.

Full fine-tuning learns an update ΔW for every weight matrix W (m×n). LoRA (Hu et al., 2021,
arXiv:2106.09685) freezes W and learns ΔW as a product of two thin matrices,
``L`` (m×r) and ``R`` (r×n), with a small rank r:

    output = A @ (W + L @ R)          (A a row of inputs, the lecture's row-vector convention)

That is r·(m + n) trainable numbers instead of m·n: at m = n = 4096 and r = 8, 65,536 instead of
16,777,216 (1/256). ``R`` starts at zero, so training starts from exactly the pretrained model;
after training, ``W + L @ R`` can be merged into one matrix and costs nothing at inference.
In ``peft`` the same two factors are stored transposed: L = ``lora_A.weight``ᵀ (``lora_A`` is r×in,
random at the start) and R = ``lora_B.weight``ᵀ (``lora_B`` is out×r, zero at the start), for
``y = x Wᵀ + x Aᵀ Bᵀ · alpha/r``.
"""
from __future__ import annotations

import torch
from torch import nn

# The lecture's worked example: a 5-dim input row A, and the factors L (5×2) and R (2×4).
LECTURE = dict(
    A=[0.1, 0.6, 0.5, 0.7, -0.3],
    L=[[0.3, -0.5], [0.2, -0.3], [0.1, 0.7], [-0.7, 0.2], [0.2, 0.5]],
    R=[[0.4, -0.3, 0.5, 0.1], [0.5, 0.3, 0.2, -0.7]],
)


def lecture_example() -> dict:
    """The lecture's numbers: B = L @ R (5×4) and C = A @ B, plus the parameter counts.

    B has 5·4 = 20 entries (the slide misprints its shape as "4×8"); L and R together have
    5·2 + 2·4 = 18. C = [−0.085, 0.138, −0.153, −0.112].
    """
    A, L, R = (torch.tensor(LECTURE[k], dtype=torch.float64) for k in ("A", "L", "R"))
    B = L @ R
    return {"A": A, "L": L, "R": R, "B": B, "C": A @ B,
            "full_parameters": B.numel(), "lora_parameters": L.numel() + R.numel()}


def lora_parameter_counts(m: int, n: int, r: int) -> dict:
    """Trainable numbers for an m×n update: full (m·n) vs LoRA of rank r (r·(m + n))."""
    for name, value in (("m", m), ("n", n), ("r", r)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if r > min(m, n):
        raise ValueError(f"rank r must lie in [1, min(m, n)] = [1, {min(m, n)}], got {r}")
    full, lora = m * n, r * (m + n)
    return {"full": full, "lora": lora, "ratio": lora / full, "saving": 1 - lora / full}


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = base(x) + x Aᵀ Bᵀ · alpha/r.

    ``alpha`` is fixed (16, as in :func:`peft_lora` and the LoRA paper) rather than tied to the rank,
    so that changing r changes the update's capacity, not its scale.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features ** 0.5)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # zero: starts as the base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """One plain ``nn.Linear`` with weight W + scaling · B @ A: same outputs, no extra cost."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        merged.weight.copy_(self.base.weight + self.scaling * self.lora_B @ self.lora_A)
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def add_lora(model: nn.Module, rank: int, alpha: float = 16,
             target: tuple[str, ...] = ("q_proj", "v_proj")) -> nn.Module:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name ends with one of ``target`` (in place)."""
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in target:
                setattr(module, child_name, LoRALinear(child, rank, alpha))
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------- peft, for training

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def peft_lora(model, rank: int, alpha: float = 16, dropout: float = 0.0,
              target_modules: tuple[str, ...] = ALL_LINEAR, new_token_ids: list[int] | None = None):
    """Wrap a transformers causal LM with ``peft`` LoRA adapters of ``rank`` on ``target_modules``.

    The update is scaled by alpha/r. As in the LoRA paper, ``alpha`` is fixed (default 16) rather
    than raised with the rank: with Adam, a larger rank otherwise moves the weights further at the
    same learning rate, so one learning rate would not suit a whole rank sweep. Only the adapters are trainable, plus the
    embedding rows of ``new_token_ids`` if given (peft's ``trainable_token_indices``): tokens the
    base model never saw must be learned, and a frozen embedding cannot learn them.
    """
    from peft import get_peft_model

    config = lora_config(rank, alpha, dropout, target_modules, new_token_ids)
    if new_token_ids and getattr(model.config, "tie_word_embeddings", False):
        untie_embeddings(model)
    return get_peft_model(model, config)


def lora_config(rank: int, alpha: float = 16, dropout: float = 0.0, target_modules: tuple[str, ...] = ALL_LINEAR,
                new_token_ids: list[int] | None = None):
    """The ``peft.LoraConfig`` of :func:`peft_lora`; TRL trainers take it as ``peft_config`` and wrap
    the model themselves."""
    from peft import LoraConfig

    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        raise ValueError(f"LoRA rank must be an integer >= 1, got {rank}")
    return LoraConfig(task_type="CAUSAL_LM", r=int(rank), lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=list(target_modules), bias="none",
                      trainable_token_indices=list(new_token_ids) if new_token_ids else None)


@torch.no_grad()
def untie_embeddings(model) -> None:
    """Give a tied model's LM head its own copy of the embedding matrix (in place).

    Needed before training some embedding rows with peft: TRL's fused LM head reads the head's
    plain ``weight``, which peft's wrapper for tied, partly trainable embeddings does not provide.
    The output layer then stays frozen while the new tokens' input rows learn.
    """
    head = model.get_output_embeddings()
    head.weight = nn.Parameter(model.get_input_embeddings().weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False


def merge_lora(peft_model):
    """The plain transformers model with every adapter merged into its weights (``merge_and_unload``)."""
    return peft_model.merge_and_unload()
