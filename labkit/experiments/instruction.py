"""Lab 02's SFT demonstrations and lab 03's LoRA runs: short fine-tuning runs from the pretrained model.

Every run starts from :func:`fresh_from_pretrained` (the cached pretraining stage with fresh
embeddings for tokens it never saw), trains with :func:`labkit.train.sft.train_sft` and scores
held-out examples by exact match.

The demonstrations whose figures the course quotes are declared here as measurements
(:func:`labkit.reference.measurement`): what SFT adds to pretraining (the closed-QA questions asked of
both models), forgetting, imbalance and label noise (lab 02) and the LoRA rank sweep (lab 03). Each
runs what the lab runs and returns its figures through the same ``*_figures`` function the lab calls
to print them beside the reference.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit import checkpoint, pipeline, reference, runtime
from labkit.experiments import Run
from labkit.lora import peft_lora
from labkit.metrics import instruction_scores, score_summary, training_state_megabytes
from labkit.models import count_parameters, refresh_embeddings
from labkit.presets import SFTStageConfig, get_preset
from labkit.train.sft import tokens_new_to_the_model, train_sft
from labkit.world.tasks import (ambiguous_brainstorm, exact_categories, task_mixture, task_split,
                                with_wrong_answers)


def fresh_from_pretrained(preset=None):
    """``(model, tokenizer)``: the pretrained stage's model, with fresh embeddings for new tokens.

    The starting point of every SFT run in lab 02 (and of the ``sft`` stage itself).
    """
    preset = preset or get_preset()
    model, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("pretrain", preset))
    refresh_embeddings(model, tokens_new_to_the_model(tokenizer), seed=preset.seed)
    return model, tokenizer


def demo_run(train_rows: list[dict], eval_rows: list[dict], preset=None, *, model=None, tokenizer=None,
             epochs: float | None = None, progress: bool = True) -> Run:
    """One short SFT run for lab 02: train on ``train_rows``, score ``eval_rows``.

    Starts from :func:`fresh_from_pretrained` unless ``model``/``tokenizer`` are given (to continue
    training one, as in the forgetting demo). Returns a :class:`Run` whose row holds the training
    ``seconds`` and whose outputs are the ``model``, ``tokenizer``, ``scores`` (one row per eval
    example) and ``summary`` (exact match per category).
    """
    preset = preset or get_preset()
    if model is None:
        model, tokenizer = fresh_from_pretrained(preset)
    config = SFTStageConfig(**{**preset.sft.__dict__, "epochs": epochs or preset.sft_demos.epochs})
    model.train()
    result = train_sft(model, tokenizer, train_rows, config, seed=preset.seed, progress=progress)
    scores = instruction_scores(model, tokenizer, eval_rows, max_new_tokens=preset.sft.max_new_tokens)
    return Run(row={"seconds": result.seconds}, history=result.history,
               outputs={"model": model, "tokenizer": tokenizer, "scores": scores, "summary": score_summary(scores)})


# ------------------------------------------------------------------- catastrophic forgetting

FORGETTING_FIRST = ("classify", "rewrite", "brainstorm")  # the tasks of the first fine-tuning
FORGETTING_THEN = ("arithmetic",)                          # the task of the second, alone


def forgetting_figures(stage_a: Run, stage_b: Run) -> dict:
    """Exact match on each task after the first fine-tuning (``before``) and after the second
    (``after``), with the mean over the first tasks (``first_tasks_exact_match``)."""
    figures = {}
    for when, run in (("before", stage_a), ("after", stage_b)):
        exact = run.outputs["summary"]["exact_match"]
        figures[when] = {f"{task}_exact_match": float(exact[task]) for task in (*FORGETTING_FIRST, *FORGETTING_THEN)}
        figures[when]["first_tasks_exact_match"] = float(exact[list(FORGETTING_FIRST)].mean())
    return figures


@reference.measurement("lab02_forgetting", lab="02", seconds=90,
                       across_machines={"first_tasks_exact_match": 0.1, "*exact_match": 0.15})
def lab02_forgetting(preset) -> dict:
    """Lab 02: fine-tune on :data:`FORGETTING_FIRST`, then on :data:`FORGETTING_THEN` alone; score
    all four tasks on held-out examples after each."""
    n, seed = preset.sft_demos.per_category, preset.world_seed
    first = task_split("train", n, seed, FORGETTING_FIRST)
    then = task_split("train", n, seed, FORGETTING_THEN)
    held_out = task_split("validation", preset.sft_demos.eval_per_category, seed, (*FORGETTING_FIRST, *FORGETTING_THEN))
    stage_a = demo_run(first, held_out, preset, progress=False)
    stage_b = demo_run(then, held_out, preset, model=stage_a.outputs["model"], tokenizer=stage_a.outputs["tokenizer"],
                       progress=False)
    return forgetting_figures(stage_a, stage_b)


# ---------------------------------------------------------------- lab 02: what SFT adds to pretraining

def story_form(prompt: str) -> str:
    """A closed-QA instruction as lab 01's stories ask it: the story, ``question : …``, then ``answer :``."""
    story, question = prompt.split(" story : ", 1)[1].split(" question : ")
    return f"{story} question : {question} answer :"


@torch.no_grad()
def story_answers(model, tokenizer, texts: list[str], max_new_tokens: int = 2) -> list[str]:
    """The first word of ``model``'s greedy continuation of each text (one text at a time: no padding)."""
    model.eval()
    device = next(model.parameters()).device
    answers = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        words = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split()
        answers.append(words[0] if words else "")
    return answers


def knowledge_table(scores, pretrained, tokenizer):
    """Lab 02: every closed-QA question of ``scores`` answered twice. ``scores`` is the SFT model's
    :func:`labkit.metrics.instruction_scores` table (its ``exact`` column: asked as an instruction, scored
    as the stage scores it; other categories are left out); ``pretrained`` (with its ``tokenizer``), which
    never saw an instruction, is asked in its stories' own form (:func:`story_form`; its first word
    against the answer's). Columns: ``question`` (``who is …?`` or ``how many …?``), ``answer``,
    ``sft`` and ``pretrained`` (right or not)."""
    import pandas as pd

    closed = scores[scores["category"] == "closed_qa"]
    replies = story_answers(pretrained, tokenizer, [story_form(p) for p in closed["prompt"]])
    return pd.DataFrame({
        "question": ["who is …?" if " question : who " in p else "how many …?" for p in closed["prompt"]],
        "answer": closed["answer"].values,
        "sft": closed["exact"].values.astype(bool),
        "pretrained": [reply == answer.split()[0] for reply, answer in zip(replies, closed["answer"])],
    })


def knowledge_figures(table) -> dict:
    """:func:`knowledge_table` in numbers: per kind of question (``how_many``, ``who``) and ``all``, the
    questions, the share each model answers right, the questions the SFT model misses and how many of
    those the pretrained model misses too."""
    def shares(part) -> dict:
        return {"questions": int(len(part)), "sft_exact_match": float(part["sft"].mean()),
                "pretrained_exact_match": float(part["pretrained"].mean()), "sft_missed": int((~part["sft"]).sum()),
                "missed_by_both": int((~part["sft"] & ~part["pretrained"]).sum())}
    kinds = {"how_many": table[table["question"] == "how many …?"], "who": table[table["question"] == "who is …?"]}
    return {**{kind: shares(part) for kind, part in kinds.items() if len(part)}, "all": shares(table)}


@reference.measurement("lab02_knowledge", lab="02", seconds=5,
                       across_machines={"*exact_match": 0.1, "sft_missed": 10, "missed_by_both": 10})
def lab02_knowledge(preset) -> dict:
    """Lab 02, section 5: the held-out closed-QA questions of the ``sft`` stage's test answered by the SFT
    model and, in its stories' own form, by the pretrained model (:func:`knowledge_table`)."""
    sft_model, sft_tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("sft", preset, progress=False))
    scores = instruction_scores(sft_model, sft_tokenizer, pipeline.sft_rows(preset, "test"),  # as lab 02 scores them
                                max_new_tokens=preset.sft.max_new_tokens)
    pretrained, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("pretrain", preset, progress=False))
    return knowledge_figures(knowledge_table(scores, pretrained, tokenizer))


# ---------------------------------------------------------------- lab 02's slider experiments

def imbalance_experiment(arithmetic_share: float, preset=None, progress: bool = False) -> Run:
    """Train on a fixed budget of arithmetic + classify examples with this share of arithmetic.

    The budget is ``2 × sft_demos.per_category`` examples; returns exact match on each category.
    """
    if not 0 <= arithmetic_share <= 1:
        raise ValueError(f"arithmetic share must lie in [0, 1], got {arithmetic_share}")
    preset = preset or get_preset()
    n = 2 * preset.sft_demos.per_category
    train = task_mixture("train", n, {"arithmetic": arithmetic_share, "classify": 1 - arithmetic_share},
                         seed=preset.world_seed)
    test = task_split("validation", preset.sft_demos.eval_per_category, preset.world_seed, ("arithmetic", "classify"))
    run = demo_run(train, test, preset, progress=progress)
    summary = run.outputs["summary"]
    return Run(row={"arithmetic share": arithmetic_share, "examples": len(train),
                    "arithmetic": float(summary.loc["arithmetic", "exact_match"]),
                    "classify": float(summary.loc["classify", "exact_match"]), **run.row},
               history=run.history)


IMBALANCE_SHARES = (0.1, 0.5)  # the shares of arithmetic lab 02 trains (and the reference measures)


def imbalance_figures(rows: list[dict]) -> dict:
    """Each category's exact match at each share of arithmetic: ``arithmetic_share_10.classify_exact_match`` …
    ``rows``: :func:`imbalance_experiment`'s rows (or the imbalance panel's)."""
    return {f"arithmetic_share_{round(100 * row['arithmetic share'])}":
            {f"{task}_exact_match": row[task] for task in ("arithmetic", "classify")} for row in rows}


@reference.measurement("lab02_imbalance", lab="02", seconds=80, across_machines={"*exact_match": 0.15})
def lab02_imbalance(preset) -> dict:
    """Lab 02: the imbalance panel's two runs, at :data:`IMBALANCE_SHARES`."""
    return imbalance_figures([imbalance_experiment(share, preset).row for share in IMBALANCE_SHARES])


NOISE_CATEGORIES = ("classify", "rewrite", "brainstorm")


def noise_experiment(examples_per_category: int, wrong_share: float, preset=None, progress: bool = False) -> Run:
    """Train on ``examples_per_category`` of three categories with a ``wrong_share`` of wrong answers.

    Quality vs quantity: compare e.g. 200 clean examples per category with 800 of which 40 % are wrong.
    Returns exact match on clean held-out examples.
    """
    if examples_per_category < 1:
        raise ValueError(f"examples per category must be >= 1, got {examples_per_category}")
    preset = preset or get_preset()
    train = with_wrong_answers(task_split("train", examples_per_category, preset.world_seed, NOISE_CATEGORIES),
                               wrong_share, seed=preset.seed)
    test = task_split("validation", preset.sft_demos.eval_per_category, preset.world_seed, NOISE_CATEGORIES)
    run = demo_run(train, test, preset, progress=progress,
                   epochs=preset.sft_demos.epochs * preset.sft_demos.per_category / max(examples_per_category, 1))
    return Run(row={"examples per category": examples_per_category, "wrong share": wrong_share,
                    "exact_match": float(run.outputs["summary"].loc["overall", "exact_match"]), **run.row},
               history=run.history)


def noise_settings(preset) -> dict[str, tuple[int, float]]:
    """Lab 02's three quality-vs-quantity runs, as (examples per category, share of wrong answers):
    a quarter of the examples clean, all of them with half the answers wrong, all of them clean."""
    n = preset.sft_demos.per_category
    return {"small_clean": (max(1, n // 4), 0.0), "large_noisy": (n, 0.5), "large_clean": (n, 0.0)}


def noise_figures(rows: dict[str, dict]) -> dict:
    """Each run's examples per category and exact match; ``rows`` maps the names of
    :func:`noise_settings` to :func:`noise_experiment`'s rows (or the noise panel's)."""
    return {name: {"per_category_examples": row["examples per category"], "wrong_share": row["wrong share"],
                   "exact_match": row["exact_match"]} for name, row in rows.items()}


@reference.measurement("lab02_noise", lab="02", seconds=170, across_machines={"exact_match": 0.1})
def lab02_noise(preset) -> dict:
    """Lab 02: the three runs of :func:`noise_settings`."""
    return noise_figures({name: noise_experiment(n, wrong, preset).row
                          for name, (n, wrong) in noise_settings(preset).items()})


def ambiguity_experiment(clear: bool, preset=None, progress: bool = True) -> Run:
    """Train on brainstorm answers in two conventions (shop order, alphabetical); exact match per convention.

    ``clear=False``: both conventions behind one instruction; ``clear=True``: each has its own. The
    row maps each convention to its exact match; ``outputs["scores"]`` has one row per example.
    """
    preset = preset or get_preset()
    train = ambiguous_brainstorm("train", preset.sft_demos.per_category, clear=clear, seed=preset.world_seed)
    held_out = ambiguous_brainstorm("validation", 2 * preset.sft_demos.eval_per_category, clear=clear,
                                    seed=preset.world_seed)
    run = demo_run(train, held_out, preset, progress=progress)
    scores = run.outputs["scores"]
    scores["convention"] = [r["convention"] for r in held_out]
    return Run(row={k: float(v) for k, v in scores.groupby("convention").exact.mean().items()},
               history=run.history, outputs={"scores": scores})


# ---------------------------------------------------------------------- lab 03's LoRA runs

def lora_experiment(rank: int | None, preset=None, *, progress: bool = False, callback: Callable | None = None) -> Run:
    """Fine-tune the pretrained model on lab 03's SFT mix with LoRA of ``rank`` (``None``: full).

    Every run starts from the same pretrained weights with the same data, steps and seed. The row:
    rank, trainable parameters, their share, exact match on held-out examples, training seconds,
    the training-state memory (MB, computed) and, on a GPU, the measured peak memory; the outputs:
    the trained ``model`` and its ``tokenizer``.
    """
    preset = preset or get_preset()
    lab = preset.lora_sweep
    if rank is not None and (int(rank) != rank or rank < 1):
        raise ValueError(f"LoRA rank must be an integer >= 1 (or None for full fine-tuning), got {rank}")
    model, tokenizer = fresh_from_pretrained(preset)
    total = count_parameters(model)
    if rank is not None:
        runtime.seed_everything(preset.seed)  # the adapters' random init: same for every run and order
        model = peft_lora(model, int(rank), new_token_ids=tokens_new_to_the_model(tokenizer))
    trainable = count_parameters(model, trainable_only=True)
    config = SFTStageConfig(**{**preset.sft.__dict__, "epochs": lab.epochs,
                               "lr": lab.lr if rank is None else lab.lora_lr})
    rows = task_mixture("train", lab.train_examples, dict(preset.sft.category_weights), seed=preset.world_seed)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train_sft(model, tokenizer, rows, config, seed=preset.seed, progress=progress, callback=callback)
    categories = exact_categories(c for c, weight in preset.sft.category_weights if weight > 0)
    scores = instruction_scores(model, tokenizer, task_split("validation", lab.eval_per_category, preset.world_seed,
                                                             categories), max_new_tokens=preset.sft.max_new_tokens)
    return Run(row={"rank": "full" if rank is None else int(rank), "trainable parameters": trainable,
                    "trainable share": trainable / total,
                    "exact_match": float(score_summary(scores).loc["overall", "exact_match"]),
                    "seconds": result.seconds,
                    "training state MB": training_state_megabytes(total, trainable),
                    "peak GPU MB": torch.cuda.max_memory_allocated() / 1e6 if cuda else None},
               history=result.history, outputs={"model": model, "tokenizer": tokenizer})


def lora_sweep_figures(rows: list[dict]) -> dict:
    """Each run of the rank sweep (``full``, ``rank_1``, ``rank_8`` …): exact match, trainable
    parameters, training seconds, the training state's MB and, on a GPU, the measured peak.
    ``rows``: :func:`lora_experiment`'s rows (or the LoRA panel's)."""
    figures = {}
    for row in rows:
        run = {"exact_match": row["exact_match"], "trainable_parameters": row["trainable parameters"],
               "train_seconds": row["seconds"], "training_state_MB": row["training state MB"]}
        if row.get("peak GPU MB") is not None:
            run["peak_GPU_MB"] = row["peak GPU MB"]
        figures["full" if row["rank"] == "full" else f"rank_{row['rank']}"] = run
    return figures


@reference.measurement("lab03_lora_sweep", lab="03", seconds=400,
                       across_machines={"exact_match": 0.1, "trainable_parameters": 0})
def lab03_lora_sweep(preset) -> dict:
    """Lab 03: full fine-tuning, then LoRA at every rank of ``preset.lora_sweep.ranks``."""
    return lora_sweep_figures([lora_experiment(rank, preset).row for rank in (None, *preset.lora_sweep.ranks)])
