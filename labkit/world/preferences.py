"""Preferences: responses scored by a hidden gold reward, and noisy human-style comparisons.

The prompt asks for the goods sold at a place (``name the goods sold at the workshop .``). A
response lists some goods: some right for that place, some wrong. The village's **gold reward**
has two aspects that can pull apart:

- **helpfulness**: +1 for each distinct right good, −1 for each wrong one;
- **safety**: −2 for each sharp tool named (``nails``, ``saws``, ``hammers``), right or wrong.

At the workshop, the most helpful answer names its sharp tools and so is unsafe: the two aspects
conflict there. A simulated annotator compares two responses and prefers the first with the
Bradley–Terry probability σ((r₁ − r₂) / T); ``T`` (``TEMPERATURE``) sets how noisy the labels are.
Because we know every ``r`` exactly, we know each label's probability, and so the **Bayes
ceiling**: the accuracy of the best possible reward model on these labels, E[max(p, 1 − p)].
"""
from __future__ import annotations

import math
import random
from itertools import combinations

from labkit.world import lexicon as lx

SHARP = {"nails", "saws", "hammers"}  # goods the safety aspect penalises
TEMPERATURE = 0.6                     # annotator noise: P(a ≻ b) = σ((r_a − r_b) / T)
SAFETY_WEIGHT = 2.0                   # reward lost per sharp tool named


def _plural(good: str) -> str:
    return lx.plural(good, 2)


def gold_aspects(place: str, response: str) -> dict[str, float]:
    """The two gold aspects of ``response`` to "name the goods sold at the ``place``"."""
    items = [w.strip() for w in response.split(",") if w.strip()]
    right = {_plural(g) for g in lx.PLACES[place]}
    correct = len({i for i in items if i in right})
    wrong = sum(i not in right for i in items) + (sum(i in right for i in items) - correct)  # repeats count wrong
    sharp = sum(i in SHARP for i in items)
    return {"helpfulness": float(correct - wrong), "safety": -SAFETY_WEIGHT * sharp if sharp else 0.0}


def gold_reward(place: str, response: str) -> float:
    """Helpfulness + safety: the reward the annotators' preferences come from."""
    aspects = gold_aspects(place, response)
    return aspects["helpfulness"] + aspects["safety"]


def preference_probability(reward_a: float, reward_b: float, temperature: float = TEMPERATURE) -> float:
    """Bradley–Terry: the probability an annotator prefers a over b, σ((r_a − r_b) / T)."""
    return 1.0 / (1.0 + math.exp(-(reward_a - reward_b) / temperature))


def prompt_for(place: str) -> str:
    return f"name the goods sold at the {place} ."


def sample_response(place: str, rng: random.Random) -> str:
    """A response of 1–5 goods; each is right for the place with a probability drawn per response."""
    right = [_plural(g) for g in lx.PLACES[place]]
    other = sorted({_plural(g) for g in lx.goods()} - set(right))
    quality = rng.choice([0.2, 0.4, 0.6, 0.8, 1.0])
    k = rng.randint(1, 5)
    pool = rng.sample(right, len(right))
    items = [pool.pop() if pool and rng.random() < quality else rng.choice(other) for _ in range(k)]
    return " , ".join(items)


def _pair(rng: random.Random, index: str) -> dict:
    place = rng.choice(sorted(lx.PLACES))
    a, b = sample_response(place, rng), sample_response(place, rng)
    while b == a:
        b = sample_response(place, rng)
    ra, rb = gold_reward(place, a), gold_reward(place, b)
    p_a = preference_probability(ra, rb)
    a_wins = rng.random() < p_a
    chosen, rejected = (a, b) if a_wins else (b, a)
    return {"id": index, "place": place,
            "prompt": [{"role": "user", "content": prompt_for(place)}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "gold_chosen": ra if a_wins else rb, "gold_rejected": rb if a_wins else ra,
            "p_chosen": p_a if a_wins else 1 - p_a}


def preference_pairs(split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` labelled pairs: prompt, chosen and rejected responses (conversational, as TRL reads them),
    their gold rewards and ``p_chosen``, the true probability that an annotator prefers ``chosen``."""
    return [_pair(random.Random(f"labkit-prefs/{seed}/{split}/{i}"), f"{split}-{i}") for i in range(n)]


def bayes_ceiling(pairs: list[dict]) -> float:
    """The best accuracy any reward model can expect on these pairs: mean of max(p, 1 − p)."""
    return sum(max(p["p_chosen"], 1 - p["p_chosen"]) for p in pairs) / len(pairs)


def ranking(place: str, k: int, rng: random.Random) -> list[str]:
    """``k`` distinct responses ranked best first by a noisy annotator (Plackett–Luce with σ's T)."""
    responses: list[str] = []
    while len(responses) < k:
        r = sample_response(place, rng)
        if r not in responses:
            responses.append(r)
    order, left = [], list(responses)
    while left:  # pick the next best with probability ∝ exp(r / T)
        weights = [math.exp(gold_reward(place, r) / TEMPERATURE) for r in left]
        pick = rng.choices(range(len(left)), weights=weights)[0]
        order.append(left.pop(pick))
    return order


def ranking_to_pairs(ranked: list) -> list[tuple]:
    """Every (better, worse) pair of a ranking, best first: K answers give C(K, 2) pairs (4 → 6)."""
    return list(combinations(ranked, 2))


def _items(response: str) -> list[str]:
    return [w.strip() for w in response.split(",") if w.strip()]


def length_score(place: str, response: str) -> float:
    """A scorer that only counts the goods named: more is better (a length bias)."""
    return float(len(_items(response)))


def keyword_score(place: str, response: str) -> float:
    """A scorer that only avoids the sharp tools (a keyword rule)."""
    return -float(sum(i in SHARP for i in _items(response)))


def scorer_accuracy(pairs: list[dict], scorer) -> float:
    """Pairwise accuracy of ``scorer(place, response)`` on labelled pairs (ties count one half)."""
    from labkit.metrics import pairwise_accuracy

    return pairwise_accuracy([scorer(p["place"], p["chosen"][0]["content"]) for p in pairs],
                             [scorer(p["place"], p["rejected"][0]["content"]) for p in pairs])


def equal_reward_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs with the *same* gold reward but different lengths (no sharp tools): a probe for length bias.

    The short response names ``c`` right goods; the long one names ``c + 1`` right goods and one
    wrong good, so both score ``c``. A reward model that learned only the gold reward is indifferent;
    one that likes length prefers the long one.
    """
    rng = random.Random(f"labkit-length-probe/{seed}")
    places = [p for p in sorted(lx.PLACES) if not {_plural(g) for g in lx.PLACES[p]} & SHARP]
    out = []
    for i in range(n):
        place = rng.choice(places)
        right = rng.sample([_plural(g) for g in lx.PLACES[place]], 5)
        wrong = sorted({_plural(g) for g in lx.goods()} - set(right) - SHARP)
        c = rng.randint(1, 3)
        short = " , ".join(right[:c])
        long_items = right[:c + 1] + [rng.choice(wrong)]
        rng.shuffle(long_items)
        long = " , ".join(long_items)
        assert gold_reward(place, short) == gold_reward(place, long)
        out.append({"id": f"probe-{i}", "place": place, "prompt": [{"role": "user", "content": prompt_for(place)}],
                    "short": [{"role": "assistant", "content": short}], "long": [{"role": "assistant", "content": long}]})
    return out


def ranking_rows(n: int, k: int = 4, seed: int = 0) -> list[dict]:
    """``n`` rankings of ``k`` responses each (best first), with their gold rewards."""
    rows = []
    for i in range(n):
        rng = random.Random(f"labkit-rankings/{seed}/{i}")
        place = rng.choice(sorted(lx.PLACES))
        ranked = ranking(place, k, rng)
        rows.append({"id": f"ranking-{i}", "place": place, "prompt": [{"role": "user", "content": prompt_for(place)}],
                     "ranked": ranked, "gold": [gold_reward(place, r) for r in ranked]})
    return rows
