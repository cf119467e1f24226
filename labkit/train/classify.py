"""A tiny text classifier trained from scratch, to watch shortcut learning happen (lab 01).

The model is the same tiny Llama we pretrain, with its language-model head swapped for a
two-way classification head (``LlamaForSequenceClassification``): it reads the whole description
and classifies it from the hidden state of the *last real token*, which (with causal attention)
is the only position that has seen every word. Padding goes on the right and ``pad_token_id`` is
set, so the model can find that last real token in each row.

Training is a plain loop: sample a batch, cross-entropy on the two logits, AdamW step, now and then
measure accuracy on each evaluation set. Trained on :mod:`labkit.world.shortcut`'s ``train`` split,
it finds the one-word shortcut (the file format) long before the true rule, and so fails on the
``probe`` split; trained on ``balanced`` data, the shortcut is useless and it learns the rule.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import LlamaForSequenceClassification

from labkit import runtime
from labkit.models import tiny_llama_config
from labkit.train.common import TrainResult
from labkit.tokenizer import train_tokenizer
from labkit.world.shortcut import LABELS, shortcut_vocabulary

# The classifier's size: small enough to train in seconds on a laptop CPU.
D_MODEL = 64     # width of the residual stream
N_LAYERS = 2     # transformer blocks: one to gather the attributes, one more to combine them
N_HEADS = 4      # attention heads (D_MODEL must be divisible by it)
D_FF = 128       # width of each block's MLP
MAX_LEN = 32     # longest description in tokens (they have about 20)


@dataclass
class ClassifierRun(TrainResult):
    """The result of :func:`train_classifier`: its history ({'step', 'loss', <eval set>: accuracy}),
    the accuracies after training, and the trained model with its tokenizer."""

    final: dict[str, float] = field(default_factory=dict)  # eval set name -> accuracy after training
    model: LlamaForSequenceClassification | None = None
    tokenizer: object = None


def shortcut_tokenizer():
    """A word-level tokenizer that knows every word of the shortcut split (no unknown words)."""
    return train_tokenizer([], extra_words=shortcut_vocabulary())


def build_classifier(tokenizer, seed: int = 0) -> LlamaForSequenceClassification:
    """A freshly initialised tiny Llama with a 2-way head; the same seed gives the same weights."""
    config = tiny_llama_config(len(tokenizer), D_MODEL, N_LAYERS, N_HEADS, D_FF, MAX_LEN, tokenizer=tokenizer)
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: i for i, label in enumerate(LABELS)}
    config.tie_word_embeddings = False  # there is no LM head to tie to
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForSequenceClassification(config)


def encode(tokenizer, examples: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(n, longest)``, right-padded with ``<pad>``, and label ids ``(n,)``."""
    batch = tokenizer([e["text"] for e in examples], padding=True, return_tensors="pt")
    labels = torch.tensor([LABELS.index(e["label"]) for e in examples])
    return batch["input_ids"], labels


@torch.no_grad()
def _accuracy(model, input_ids: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(input_ids=input_ids[i:i + batch_size].to(device)).logits
        correct += int((logits.argmax(-1).cpu() == labels[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / len(labels)


def accuracy(run_or_model, tokenizer, examples: Sequence[dict]) -> float:
    """Share of ``examples`` whose label the classifier predicts.

    Pass a :class:`ClassifierRun` (then ``tokenizer`` may be ``None``) or a model and its tokenizer.
    """
    if isinstance(run_or_model, ClassifierRun):
        run_or_model, tokenizer = run_or_model.model, tokenizer or run_or_model.tokenizer
    return _accuracy(run_or_model, *encode(tokenizer, examples))


def predict(run: ClassifierRun, texts: Sequence[str]) -> list[str]:
    """The predicted label of each text."""
    device = next(run.model.parameters()).device
    input_ids = run.tokenizer(list(texts), padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = run.model.eval()(input_ids=input_ids.to(device)).logits
    return [LABELS[i] for i in logits.argmax(-1).tolist()]


def train_classifier(train_examples: Sequence[dict], *, steps: int, batch_size: int = 64,
                     lr: float = 3e-3, seed: int = 0, eval_sets: dict[str, Sequence[dict]] | None = None,
                     eval_every: int = 25, callback: Callable[[dict], None] | None = None,
                     progress: bool = True) -> ClassifierRun:
    """Train a fresh classifier on ``train_examples`` for ``steps`` AdamW steps.

    Each step draws ``batch_size`` examples at random (with replacement); the learning rate
    warms up over the first 5 % of steps, then decays (cosine) from ``lr`` to ``lr / 10``.
    Every ``eval_every`` steps (and after the last) the accuracy on each of ``eval_sets`` is
    appended to ``run.history`` as ``{'step', 'loss', name: accuracy, ...}`` (``loss``: that step's batch
    cross-entropy, nats) and passed to
    ``callback`` (e.g. to redraw a live plot). The same seed gives the same run.
    """
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError("steps, batch_size and eval_every must be >= 1")
    runtime.seed_everything(seed)
    device = runtime.device()
    tokenizer = shortcut_tokenizer()
    model = build_classifier(tokenizer, seed).to(device)
    input_ids, labels = encode(tokenizer, train_examples)
    evals = {name: encode(tokenizer, examples) for name, examples in (eval_sets or {}).items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    # Short linear warm-up, then cosine decay to lr/10: settles the end of a short run.
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    order = torch.Generator().manual_seed(seed)  # which examples each batch draws

    run = ClassifierRun(model=model, tokenizer=tokenizer, steps=steps)
    start = time.perf_counter()
    model.train()
    for step in tqdm(range(1, steps + 1), desc="classifier", disable=not progress):
        idx = torch.randint(len(labels), (batch_size,), generator=order)
        logits = model(input_ids=input_ids[idx].to(device)).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            record = {"step": step, "loss": loss.item()}
            record.update({name: _accuracy(model, *data) for name, data in evals.items()})
            run.history.append(record)
            if callback is not None:
                callback(record)
    run.seconds = time.perf_counter() - start
    run.final = {name: acc for name, acc in run.history[-1].items() if name not in ("step", "loss")}
    model.eval()
    return run
