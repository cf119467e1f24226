"""Evaluation helpers: how good a model is, and the back-of-envelope sums around it."""
from __future__ import annotations

import pandas as pd
import torch

from labkit.losses import nats_to_bits


def storage_arithmetic(tokens: float, nats_per_token: float, parameters: float,
                       bits_per_parameter: int = 16) -> dict[str, float]:
    """Could a model memorise its data? Compare the data's information with the model's size.

    A loss of L nats/token means the data carries about L / ln 2 bits per token that the model
    could not predict; ``tokens`` of it need ``tokens × bits / 8`` bytes. The weights take
    ``parameters × bits_per_parameter / 8`` bytes. GPT-3: 500e9 tokens at 1.9 nats/token ≈ 171 GB
    of information; 175e9 parameters in 16 bits ≈ 350 GB of weights — room, in principle, to store it.
    """
    bits = nats_to_bits(nats_per_token)
    return {
        "bits_per_token": bits,
        "data_gigabytes": tokens * bits / 8 / 1e9,
        "model_gigabytes": parameters * bits_per_parameter / 8 / 1e9,
    }


@torch.no_grad()
def teacher_forcing_table(model, tokenizer, text: str, top_k: int = 3) -> pd.DataFrame:
    """For each position of ``text``: the true next token, its probability and the model's top guesses.

    The model always reads the *true* prefix (teacher forcing), even where its own guess was wrong.
    """
    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(device)
    ids = torch.cat([ids, torch.tensor([[tokenizer.eos_token_id]], device=device)], dim=1)
    probs = model(input_ids=ids).logits[0, :-1].float().softmax(-1)
    rows = []
    for t in range(ids.size(1) - 1):
        true_id = int(ids[0, t + 1])
        top = probs[t].topk(top_k)
        rows.append({
            "context (end)": tokenizer.decode(ids[0, max(0, t - 4): t + 1], skip_special_tokens=False),
            "true next": tokenizer.convert_ids_to_tokens(true_id),
            "p(true)": float(probs[t, true_id]),
            "loss (nats)": float(-probs[t, true_id].log()),
            "model's guesses": ", ".join(f"{tokenizer.convert_ids_to_tokens(int(i))} {float(p):.2f}"
                                         for p, i in zip(top.values, top.indices)),
        })
    return pd.DataFrame(rows)


@torch.no_grad()
def nats_per_word(model, tokenizer, texts: list[str]) -> float:
    """Loss of any causal LM on space-separated ``texts`` in nats per *word* (+ one end token each).

    Our tiny models use one token per word, so this equals their ordinary loss. A hub model splits
    words into sub-word pieces; summing the pieces' losses per text and dividing by the number of
    words puts it in the same unit as the world's entropy floor, so the two can be compared.
    """
    device = next(model.parameters()).device
    eos = tokenizer.eos_token or ""
    total, words = 0.0, 0
    for text in texts:  # one text at a time: no padding subtleties across tokenizers
        ids = tokenizer(text + eos, return_tensors="pt")["input_ids"].to(device)
        if tokenizer.bos_token_id is not None and ids[0, 0] != tokenizer.bos_token_id:
            ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]], device=device), ids], dim=1)
        logits = model(input_ids=ids).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        words += len(text.split()) + 1
    return total / words


def training_memory_gigabytes(parameters: float, bytes_per_value: int = 4, copies: int = 4) -> float:
    """Memory to train with AdamW in full precision: weight + gradient + two moment estimates.

    ``copies`` values of ``bytes_per_value`` bytes per parameter (activations not counted):
    7e9 parameters × 16 bytes = 112 GB; GPT-3's 175e9 = 2,800 GB.
    """
    return parameters * bytes_per_value * copies / 1e9


def training_state_megabytes(total_parameters: int, trainable_parameters: int, bytes_per_value: int = 4) -> float:
    """Memory for every weight plus, for trainable weights only, a gradient and AdamW's two moments.

    :func:`training_memory_gigabytes` with one copy of the frozen weights and four of the trainable
    ones; activations are not counted. This is where LoRA saves: frozen weights need no gradient
    and no optimiser state.
    """
    frozen = total_parameters - trainable_parameters
    return 1000 * (training_memory_gigabytes(frozen, bytes_per_value, copies=1)
                   + training_memory_gigabytes(trainable_parameters, bytes_per_value, copies=4))


def ppo_memory_plan(parameters: float, adapter_parameters: float, *, weight_bytes: int = 2, gradient_bytes: int = 2,
                    optimiser_bytes: int = 8) -> "pd.DataFrame":
    """Memory of PPO's four roles (policy, critic, reference, reward model) in two layouts, on paper.

    *Full copies*: four models of ``parameters`` each; policy and critic train (weights + gradients
    + AdamW's two moments), reference and reward model are frozen (weights only). *LoRA*: one frozen
    base serves policy (adapters on), reference (adapters off) and the critic's trunk; the adapters
    (``adapter_parameters``, for policy and critic each) train; the reward model stays a separate
    frozen copy. Defaults: bf16 weights and gradients (2 bytes), fp32 moments (2 × 4 bytes).
    Activations are not counted. Returns one row per layout and model, sizes in GB.
    """
    import pandas as pd

    trained = weight_bytes + gradient_bytes + optimiser_bytes
    rows = [("full copies", "policy (trained)", parameters, trained),
            ("full copies", "critic / value model (trained)", parameters, trained),
            ("full copies", "reference (frozen)", parameters, weight_bytes),
            ("full copies", "reward model (frozen)", parameters, weight_bytes),
            ("LoRA, one shared base", "base: policy + reference + critic trunk (frozen)", parameters, weight_bytes),
            ("LoRA, one shared base", "policy adapters (trained)", adapter_parameters, trained),
            ("LoRA, one shared base", "critic adapters (trained)", adapter_parameters, trained),
            ("LoRA, one shared base", "reward model (frozen)", parameters, weight_bytes)]
    return pd.DataFrame([{"layout": layout, "model": model, "parameters": n, "bytes per parameter": b,
                          "GB": n * b / 1e9} for layout, model, n, b in rows])


def pairwise_accuracy(preferred: torch.Tensor, other: torch.Tensor) -> float:
    """Share of pairs where the preferred item scores higher than the other (ties count one half)."""
    preferred, other = torch.as_tensor(preferred, dtype=torch.float64), torch.as_tensor(other, dtype=torch.float64)
    return float(((preferred > other).double() + 0.5 * (preferred == other).double()).mean())


def win_rate(policy_scores, reference_scores) -> float:
    """Share of prompts where the policy's answer scores above the reference's (ties count one half).

    The pairwise accuracy of the policy's scores against the reference's, pair by pair.
    """
    return pairwise_accuracy(policy_scores, reference_scores)


def scorer_accuracy(pairs: list[dict], scorer) -> float:
    """Pairwise accuracy of ``scorer(place, response, count)`` on labelled pairs (ties count one half)."""
    return pairwise_accuracy([scorer(p["place"], p["chosen"][0]["content"], p.get("count")) for p in pairs],
                             [scorer(p["place"], p["rejected"][0]["content"], p.get("count")) for p in pairs])


def exact_match(reply: str, answer: str) -> bool:
    """True when the reply is the answer, word for word (surrounding and repeated spaces ignored)."""
    return reply.split() == answer.split()


def json_valid(reply: str) -> bool:
    """True when the reply parses as the sentiment task's JSON object (label, confidence, evidence)."""
    from labkit.world.tasks import parse_json_answer

    return parse_json_answer(reply) is not None


def instruction_scores(model, tokenizer, rows: list[dict], *, max_new_tokens: int = 24,
                       batch_size: int = 64) -> pd.DataFrame:
    """Generate a reply to each task example and score it: one row per example.

    Columns: ``category``, ``prompt``, ``answer``, ``reply``, ``exact`` (bool) and ``json_valid``
    (bool for the ``classify`` category, whose answers are JSON; missing elsewhere).
    """
    from labkit.models import generate_replies

    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    replies = generate_replies(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    table = pd.DataFrame({
        "category": [r["category"] for r in rows],
        "prompt": [p[-1]["content"] for p in prompts],
        "answer": [r["answer"] for r in rows],
        "reply": replies,
    })
    table["exact"] = [exact_match(a, b) for a, b in zip(table["reply"], table["answer"])]
    table["json_valid"] = [json_valid(reply) if c == "classify" else None
                           for c, reply in zip(table["category"], table["reply"])]
    return table


def score_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-category exact match and JSON validity (a share in [0, 1]) plus an ``overall`` row."""
    by = scores.groupby("category", sort=False)
    table = pd.DataFrame({"examples": by.size(), "exact_match": by["exact"].mean(),
                          "json_valid": by["json_valid"].apply(lambda s: s.dropna().astype(float).mean()
                                                               if s.notna().any() else float("nan"))})
    table.loc["overall"] = [len(scores), scores["exact"].mean(), float("nan")]
    table["examples"] = table["examples"].astype(int)
    return table


@torch.no_grad()
def mean_cosine(model, tokenizer, words: list[str]) -> float:
    """Mean cosine similarity between the input embeddings of ``words`` (all distinct pairs)."""
    ids = tokenizer.convert_tokens_to_ids(list(words))
    vectors = torch.nn.functional.normalize(model.get_input_embeddings().weight[ids].float(), dim=-1)
    similarity = vectors @ vectors.T
    n = len(ids)
    return float((similarity.sum() - similarity.diagonal().sum()) / (n * n - n))
