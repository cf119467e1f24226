"""Instruction tuning (SFT) with TRL's ``SFTTrainer``: learn to answer, not just to continue text.

The data are role/content conversations (the no_robots layout). The chat template wraps each
assistant turn in ``{% generation %}`` markers, so with ``assistant_only_loss=True`` the trainer
computes next-token cross-entropy on the assistant's tokens only: the model is never trained to
*write* instructions, only to answer them. ``eos_token="<|end|>"`` makes the end-of-turn token the
one the trained model stops on.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import datasets
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import SFTConfig, SFTTrainer

from labkit import runtime
from labkit.presets import SFTStageConfig
from labkit.tokenizer import END


def messages_dataset(rows: list[dict]) -> datasets.Dataset:
    """A ``datasets.Dataset`` with one ``messages`` column (what SFTTrainer reads) from example rows."""
    return datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])


class _History(TrainerCallback):
    """Collects the trainer's logged losses, shows one progress bar, and feeds ``callback``.

    Replaces the trainer's own printing (which writes every log dict into the notebook).
    """

    def __init__(self, callback: Callable | None, progress: bool, desc: str = "SFT"):
        self.history: list[dict] = []
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
            self.history.append({"step": state.global_step, "train_loss": float(logs["loss"])})
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")
            if self.callback is not None:
                self.callback(self.history)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


@dataclass
class TrainResult:
    """What a TRL training run left: its logged losses, wall time and steps."""

    history: list[dict] = field(default_factory=list)  # {"step", "train_loss"} per logging step
    seconds: float = 0.0                                # wall time of trainer.train()
    steps: int = 0                                      # optimiser steps taken


def sft_config(config: SFTStageConfig, n_examples: int, output_dir: str, seed: int = 0,
               eos_token: str | None = END) -> SFTConfig:
    """The TRL ``SFTConfig`` for our stage config: assistant-only loss, stop on ``<|end|>``, no saving."""
    steps_per_epoch = max(1, -(-n_examples // config.batch_size))
    total = max(1, round(config.epochs * steps_per_epoch))
    return SFTConfig(
        output_dir=output_dir,
        assistant_only_loss=True,       # loss on the assistant's tokens only (the mask in lab 02)
        eos_token=eos_token,            # the token that ends an assistant turn
        max_length=None,                # our conversations are short; never truncate an answer away
        per_device_train_batch_size=config.batch_size,
        max_steps=total,
        learning_rate=config.lr,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        logging_steps=max(1, total // 40),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,              # our own bar (see _History) instead of printed log dicts
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        use_cpu=runtime.device().type == "cpu",
        bf16=False,
        fp16=False,
    )


def train_sft(model, tokenizer, rows: list[dict], config: SFTStageConfig, *, seed: int = 0,
              progress: bool = True, callback: Callable | None = None) -> TrainResult:
    """Fine-tune ``model`` in place on the conversations in ``rows`` with TRL's ``SFTTrainer``."""
    runtime.seed_everything(seed)
    recorder = _History(callback, progress)
    eos = END if END in tokenizer.get_vocab() else None  # a hub model keeps its own end-of-turn token
    with tempfile.TemporaryDirectory(prefix="labkit-sft-") as out:  # quiet: see runtime.quiet_third_party
        trainer = SFTTrainer(
            model=model,
            args=sft_config(config, len(rows), out, seed, eos),
            train_dataset=messages_dataset(rows),
            processing_class=tokenizer,
            callbacks=[recorder],
        )
        seconds = quiet_train(trainer)
    model.eval()
    return TrainResult(history=recorder.history, seconds=seconds, steps=trainer.state.global_step)


def quiet_train(trainer) -> float:
    """Run ``trainer.train()`` without the trainer's own printing (our ``_History`` bar reports); seconds."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def tokens_new_to_the_model(tokenizer) -> list[int]:
    """Ids of the tokens pretraining never showed the model: chat markers and task-only words.

    Task words such as digits, ``"label"`` or ``stale`` appear only in instructions and answers;
    the chat markers ``<|user|>``, ``<|assistant|>``, ``<|end|>`` and ``<|system|>`` first appear here.
    Empty for a tokenizer that is not labkit's word-level one (a hub model knows all its tokens).
    """
    from labkit import tokenizer as tk
    from labkit.world import story_vocabulary

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordLevel":
        return []  # a hub model's sub-word tokenizer: it was pretrained on all of its tokens
    seen = story_vocabulary() | {tk.PAD, tk.UNK, tk.BOS, tk.EOS}
    return sorted(i for word, i in tokenizer.get_vocab().items() if word not in seen)
