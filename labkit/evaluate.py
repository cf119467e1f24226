"""Judging a policy on held-out prompts: one procedure and one result type for every alignment stage.

:func:`evaluate_policy` samples answers to the held-out requests of the preference world
(:func:`labkit.world.preferences.alignment_prompts`) with fixed settings and a seed, and reports:

- the **gold reward** (and its two aspects, helpfulness and safety), the truth we know and the
  policy never sees; the **proxy reward**, the reward model's score, when a reward model is given;
- the **win rate** against a reference policy (the SFT model): the share of answers whose gold
  reward beats the reference's answer to the same prompt, ties counting one half; the reference's
  answers are sampled independently of the policy's (:func:`reference_seed`);
- the **KL divergence** to the reference, KL(π ‖ π_ref) = E_{y∼π}[log π(y|x) − log π_ref(y|x)],
  estimated on the policy's own samples: Σ_t log π(y_t | x, y_<t) − log π_ref(y_t | x, y_<t) per
  answer (stop token included), averaged;
- the mean answer length (words) and the share of distinct answers (low when a policy collapses
  onto one answer).

:func:`best_of_n` is the first, training-free alignment method: draw n answers from the SFT
policy and keep the one the reward model likes best. Its KL to the SFT policy is at most
log n − (n − 1)/n (:func:`best_of_n_kl`, the formula usually quoted as exact; it is an upper bound,
Beirami et al., 2024), reached only when the policy never repeats an answer.
:func:`best_of_n_kl_estimate` computes the KL on the empirical distribution of the answers drawn,
so best-of-n can be drawn against the same kind of sampled KL as the trained policies.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from labkit.losses import kl_estimate
from labkit.metrics import win_rate
from labkit.models import reward_scores, stop_token_ids
from labkit.world import preferences as prefs


@dataclass
class Samples:
    """Sampled answers: one entry per answer, ``n`` consecutive answers per prompt."""

    prompts: list[dict]            # the request row (place, count, prompt messages, ...) of each answer
    answers: list[str]             # decoded answer text, special tokens removed
    prompt_ids: list[list[int]]    # token ids of the rendered prompt (chat template + assistant marker)
    answer_ids: list[list[int]]    # token ids sampled, up to and including the stop token


@torch.no_grad()
def sample_answers(model, tokenizer, prompts: list[dict], *, n: int = 1, seed: int = 0, max_new_tokens: int = 24,
                   temperature: float = 1.0, batch_size: int = 128, progress: bool = False,
                   desc: str = "sampling") -> Samples:
    """``n`` answers per prompt row (rows carry role/content ``prompt`` messages), sampled at ``temperature``.

    Plain ancestral sampling (no top-k, no top-p), so the answers follow the model's own
    distribution and log-probabilities computed later are those of the sampler; ``temperature=0``
    decodes greedily instead (the single most likely token each time). The same ``seed``,
    ``batch_size`` and prompts give the same answers; the caller's random state is left untouched.
    """
    device = next(model.parameters()).device
    stop = stop_token_ids(tokenizer)
    rows = [p for p in prompts for _ in range(n)]
    was_training = model.training
    model.eval()
    out = Samples(prompts=rows, answers=[], prompt_ids=[], answer_ids=[])
    starts = range(0, len(rows), batch_size)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                     for r in rows[start:start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                              add_special_tokens=False).to(device)
            how = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0
                   else dict(do_sample=False))
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=stop,
                                       pad_token_id=tokenizer.pad_token_id, **how)
            width = batch["input_ids"].shape[1]
            for ids, mask, new in zip(batch["input_ids"], batch["attention_mask"], generated[:, width:].tolist()):
                cut = next((i + 1 for i, t in enumerate(new) if t in stop), len(new))
                out.prompt_ids.append(ids[mask.bool()].tolist())
                out.answer_ids.append(new[:cut])
                out.answers.append(tokenizer.decode(new[:cut], skip_special_tokens=True).strip())
    model.train(was_training)
    return out


@torch.no_grad()
def sequence_logprobs(model, samples: Samples, *, batch_size: int = 128) -> torch.Tensor:
    """log π(y | x) of every sampled answer under ``model``: the sum of its tokens' log-probabilities.

    Each prompt + answer is scored in one forward pass (right-padded, so positions are the natural
    ones); only the answer's tokens count.
    """
    device = next(model.parameters()).device
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    totals = []
    for start in range(0, len(samples.answers), batch_size):
        prompts = samples.prompt_ids[start:start + batch_size]
        answers = samples.answer_ids[start:start + batch_size]
        width = max(len(p) + len(a) for p, a in zip(prompts, answers))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        is_answer = torch.zeros((len(prompts), width), dtype=torch.bool)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, (p, a) in enumerate(zip(prompts, answers)):
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            is_answer[i, len(p):len(p) + len(a)] = True
            mask[i, :len(p) + len(a)] = 1
        ids, mask, is_answer = ids.to(device), mask.to(device), is_answer.to(device)
        logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
        totals.append((token_logp * is_answer[:, 1:]).sum(-1).cpu())
    model.train(was_training)
    return torch.cat(totals) if totals else torch.zeros(0)


def answer_samples(tokenizer, prompts: list[list[dict]], answers: list[list[dict]]) -> Samples:
    """Given (not sampled) answers as :class:`Samples`, tokenized as TRL's trainers do: the prompt
    rendered with the assistant marker, the answer = the tokens the whole conversation adds to it.
    ``prompts`` and ``answers`` are role/content message lists; score them with :func:`sequence_logprobs`."""
    def ids(messages, **kw):
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"])

    out = Samples(prompts=[{"prompt": p} for p in prompts], answers=[], prompt_ids=[], answer_ids=[])
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids, whole = ids(prompt, add_generation_prompt=True), ids(prompt + answer)
        if whole[:len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template renders the prompt differently inside the whole conversation, "
                             "so the answer's tokens cannot be told apart")
        out.prompt_ids.append(prompt_ids)
        out.answer_ids.append(whole[len(prompt_ids):])
        out.answers.append(" ".join(m["content"] for m in answer))
    return out


def pair_logprobs(model, tokenizer, pairs: list[dict], *, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(chosen | prompt) and log π(rejected | prompt) of every preference pair under ``model``."""
    prompts = [p["prompt"] for p in pairs]
    return (sequence_logprobs(model, answer_samples(tokenizer, prompts, [p["chosen"] for p in pairs]),
                              batch_size=batch_size),
            sequence_logprobs(model, answer_samples(tokenizer, prompts, [p["rejected"] for p in pairs]),
                              batch_size=batch_size))


def gold_table(samples: Samples) -> pd.DataFrame:
    """One row per answer: request, answer, its gold reward and aspects, length in words."""
    rows = []
    for request, answer in zip(samples.prompts, samples.answers):
        aspects = prefs.gold_aspects(request["place"], answer, request["count"])
        rows.append({"prompt": request["prompt"][-1]["content"], "group": request.get("group"),
                     "answer": answer, "gold": aspects["helpfulness"] + aspects["safety"], **aspects,
                     "words": len(answer.split())})
    return pd.DataFrame(rows)


def proxy_scores(reward_model, tokenizer, samples: Samples) -> torch.Tensor:
    """The reward model's score of every sampled answer."""
    return reward_model_fn(reward_model, tokenizer)(samples.prompts, samples.answers)


@dataclass
class PolicyEvaluation:
    """How a policy did on held-out prompts (rewards are means per answer; rates in [0, 1])."""

    name: str
    gold_reward: float                 # mean gold reward (helpfulness + safety)
    helpfulness: float                 # mean helpfulness aspect
    safety: float                      # mean safety aspect (0 = no sharp tools named)
    proxy_reward: float | None         # mean reward-model score (None without a reward model)
    win_rate: float | None             # share of answers beating the reference's, gold reward, ties ½
    kl: float | None                   # mean sequence KL(π ‖ π_ref) in nats, on the policy's samples
    length: float                      # mean answer length in words
    distinct: float                    # share of distinct answers among all sampled
    answers: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # one row per answer

    def row(self) -> pd.Series:
        """The numbers as one pandas row (named after the policy), for a comparison table."""
        return pd.Series({k: getattr(self, k) for k in ("gold_reward", "helpfulness", "safety", "proxy_reward",
                                                        "win_rate", "kl", "length", "distinct")}, name=self.name)


REFERENCE_SEED_SHIFT = 100_003   # the reference policy's sampling seed is the policy's plus this


def reference_seed(seed: int) -> int:
    """The seed the reference (SFT) policy samples with when a policy sampled with ``seed`` is judged.

    Not ``seed`` itself: with the same seed both samplers draw the same random numbers, and
    ``torch.multinomial`` then picks the same token wherever the two next-token distributions are
    close, so the two answers would be coupled (a policy judged against itself would give the same
    answer twice) and the win rate would not be the one defined, against an independent SFT answer.
    """
    return seed + REFERENCE_SEED_SHIFT


def evaluate_policy(policy, tokenizer, prompts: list[dict], reference=None, *, reward_model=None,
                    reward_tokenizer=None, samples_per_prompt: int = 4, seed: int = 0, max_new_tokens: int = 24,
                    batch_size: int = 128, name: str = "policy", progress: bool = True) -> PolicyEvaluation:
    """Sample ``samples_per_prompt`` answers per held-out prompt and judge them (see the module docstring).

    ``reference`` (the SFT policy, same tokenizer) answers the same prompts, sampled independently
    of the policy (with :func:`reference_seed`), for the win rate, and scores the policy's answers
    for the KL; without it both are ``None``. The answers table then also holds the reference's
    answer, gold reward and (with a reward model) proxy score for each prompt. Every policy judged
    with the same ``seed`` meets the same reference answers.
    """
    settings = dict(n=samples_per_prompt, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    samples = sample_answers(policy, tokenizer, prompts, seed=seed, desc=f"{name}: sampling", **settings)
    table = gold_table(samples)
    proxy = None
    if reward_model is not None:
        table["proxy"] = proxy_scores(reward_model, reward_tokenizer or tokenizer, samples).numpy()
        proxy = float(table["proxy"].mean())
    wins = kl = None
    if reference is not None:
        ref_samples = sample_answers(reference, tokenizer, prompts, seed=reference_seed(seed),
                                     desc="reference: sampling", **settings)
        ref = gold_table(ref_samples)
        table["reference answer"], table["reference gold"] = ref["answer"].values, ref["gold"].values
        if reward_model is not None:
            table["reference proxy"] = proxy_scores(reward_model, reward_tokenizer or tokenizer, ref_samples).numpy()
        wins = win_rate(table["gold"].tolist(), ref["gold"].tolist())
        table["log_ratio"] = (sequence_logprobs(policy, samples, batch_size=batch_size)
                              - sequence_logprobs(reference, samples, batch_size=batch_size)).numpy()
        kl = kl_estimate(torch.tensor(table["log_ratio"].values))
    return PolicyEvaluation(name=name, gold_reward=float(table["gold"].mean()),
                            helpfulness=float(table["helpfulness"].mean()), safety=float(table["safety"].mean()),
                            proxy_reward=proxy, win_rate=wins, kl=kl, length=float(table["words"].mean()),
                            distinct=table["answer"].nunique() / len(table), answers=table)


def heldout_judge(preset, tokenizer, reference, reward_model, reward_tokenizer, *, samples_per_prompt: int,
                  seed: int = 1):
    """``judge(policy) -> dict``: gold (and its two aspects), proxy, KL and win rate vs ``reference`` on the
    held-out prompts.

    Sampling as in the SFT stage's evaluation (its ``max_new_tokens``), ``samples_per_prompt``
    answers per prompt; the same seed at every call, so changes come from the policy alone. PPO's
    loop and the DPO and GRPO trainers call it along training, so every method's curve is made alike.
    """
    heldout = prefs.alignment_prompts("heldout")

    def judge(policy) -> dict:
        judged = evaluate_policy(policy, tokenizer, heldout, reference, reward_model=reward_model,
                                 reward_tokenizer=reward_tokenizer, samples_per_prompt=samples_per_prompt, seed=seed,
                                 max_new_tokens=preset.sft.max_new_tokens, progress=False)
        return {"gold": judged.gold_reward, "proxy": judged.proxy_reward, "kl": judged.kl, "win_rate": judged.win_rate,
                "helpfulness": judged.helpfulness, "safety": judged.safety}
    return judge


@dataclass
class PolicyRun:
    """One policy-optimisation run (PPO, DPO, GRPO, best-of-n), judged on the held-out prompts.

    The field names are the report keys (a stage's report, ``pipeline --report``) and the columns of
    the labs' tables (the run panels', lab 08's race), written here once. Rewards are means per
    answer under the world's gold reward (its two aspects beside it) and, where a reward model
    judged too, its score (``proxy_reward``); ``win_rate`` and ``kl`` are against the SFT policy.
    ``extra`` holds a method's own numbers (PPO's rollout seconds, DPO's implicit accuracy, …),
    ``outputs`` what it produced (the trained ``policy``, its ``tokenizer``, the final ``evaluation``
    with every answer, the trainer's ``result``, the models it loaded).
    """

    method: str
    gold_reward: float
    helpfulness: float
    safety: float
    proxy_reward: float | None
    win_rate: float | None
    kl: float | None
    length: float                    # mean answer length in words
    distinct: float                  # share of distinct answers
    sft_gold_reward: float           # the SFT policy's answers to the same prompts, same seed
    best_gold_reward: float          # the best achievable mean on these prompts
    train_seconds: float = 0.0       # training's wall time, evaluations along the way left out
    trainable_parameters: int = 0
    answers_sampled: int = 0         # answers sampled in training (the budget PPO and GRPO share)
    peak_MB: float | None = None     # peak memory of the process that ran it (lab 08's race measures it)
    extra: dict = field(default_factory=dict)
    history: list = field(default_factory=list, repr=False)      # the trainer's logged points
    evaluations: list = field(default_factory=list, repr=False)  # held-out judgements along training
    outputs: dict = field(default_factory=dict, repr=False)

    # the report keys: every number but peak_MB, which only lab 08's race measures (in a process of its own)
    NUMBERS = ("gold_reward", "sft_gold_reward", "best_gold_reward", "win_rate", "kl", "helpfulness", "safety",
               "length", "distinct", "proxy_reward", "train_seconds", "trainable_parameters", "answers_sampled")

    @classmethod
    def judged(cls, method: str, final: PolicyEvaluation, heldout: list[dict], result=None, **fields) -> "PolicyRun":
        """A run from its final evaluation against the SFT policy on ``heldout`` and its trainer's ``result``
        (its seconds without the evaluations along the way, trainable parameters, history and evaluations)."""
        outputs = {"evaluation": final, **fields.pop("outputs", {})}
        if result is not None:
            fields = {"train_seconds": result.seconds - result.eval_seconds,
                      "trainable_parameters": getattr(result, "trainable_parameters", 0), "history": result.history,
                      "evaluations": result.evaluations, **fields}
            outputs.setdefault("result", result)
            if getattr(result, "policy", None) is not None:
                outputs.setdefault("policy", result.policy)
        return cls(method=method, gold_reward=final.gold_reward, helpfulness=final.helpfulness, safety=final.safety,
                   proxy_reward=final.proxy_reward, win_rate=final.win_rate, kl=final.kl, length=final.length,
                   distinct=final.distinct, sft_gold_reward=float(final.answers["reference gold"].mean()),
                   best_gold_reward=prefs.best_mean_gold_reward(heldout), outputs=outputs, **fields)

    @property
    def evaluation(self) -> PolicyEvaluation:
        """The final evaluation, with every answer (``.answers``)."""
        return self.outputs["evaluation"]

    def report(self) -> dict:
        """The numbers, under their report keys, then ``extra``'s."""
        return {**{k: getattr(self, k) for k in self.NUMBERS}, **self.extra}

    def curve(self) -> list[dict]:
        """The held-out evaluations along training, keys without their ``heldout_`` prefix."""
        return [{k.removeprefix("heldout_"): v for k, v in e.items()} for e in self.evaluations]


# ------------------------------------------------------------------------------------ reward functions

def gold_reward_fn(rows: list[dict], answers: list[str]) -> torch.Tensor:
    """The world's gold reward of each answer to its request row: the truth, which RL may also train on."""
    return torch.tensor([prefs.gold_reward(r["place"], a, r["count"]) for r, a in zip(rows, answers)],
                        dtype=torch.float32)


def reward_model_fn(reward_model, tokenizer):
    """A reward function ``(rows, answers) -> scores`` that asks ``reward_model`` (the proxy)."""
    def score(rows: list[dict], answers: list[str]) -> torch.Tensor:
        return reward_scores(reward_model, tokenizer, [r["prompt"] for r in rows],
                             [[{"role": "assistant", "content": a}] for a in answers])
    return score


def reward_model_reward(reward_model, tokenizer):
    """The reward model as a reward function with TRL's signature, ``(prompts, completions, **columns)``.

    GRPO can optimise a learned reward like any rule: each completion (an assistant message list,
    or a string) is scored with its prompt messages. TRL logs it as ``rewards/reward_model/mean``.
    """
    def reward_model_score(prompts, completions, **_) -> list[float]:
        responses = [c if isinstance(c, list) else [{"role": "assistant", "content": str(c)}] for c in completions]
        return reward_scores(reward_model, tokenizer, list(prompts), responses).tolist()

    reward_model_score.__name__ = "reward_model"
    return reward_model_score


def gold_reward(prompts, completions, place, count, **_) -> list[float]:
    """The world's hidden gold reward with TRL's signature (the preference prompts' ``place`` and
    ``count`` columns): to log, at weight 0, what a policy trained on another reward really earns."""
    from labkit.rewards import completion_text

    return [float(prefs.gold_reward(p, completion_text(c), n)) for c, p, n in zip(completions, place, count)]


# ------------------------------------------------------------------------------------ best-of-n

def best_of_n_kl(n: int) -> float:
    """The upper bound log n − (n − 1)/n nats on KL(best-of-n ‖ π).

    Stiennon et al. (2020) give it as the KL itself; Beirami et al. (2024) show it is an upper bound,
    approached only when π spreads its answers so thinly that the n drawn are all different.
    """
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_kl_estimate(answers: list[str], scores, n: int) -> float:
    """KL(best-of-n ‖ π) in nats on the empirical distribution of one prompt's sampled answers.

    ``answers`` were drawn from π for one prompt, ``scores`` are the reward's score of each. With
    the answers' distinct values sorted by score, best-of-n keeps a value of probability p whose
    score is beaten by the rest with probability F⁻ exactly when all n draws score at most its score
    and not all lower (Beirami et al., 2024): π_n = (F⁻ + p)ⁿ − (F⁻)ⁿ. Then KL = Σ π_n·log(π_n / p).
    Repeated answers pull it below :func:`best_of_n_kl`; answers with equal scores count as one
    value (best-of-n cannot tell them apart). With m answers drawn the estimate sees at most log m.
    """
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    if len(answers) != len(scores) or not answers:
        raise ValueError(f"need one score per answer and at least one answer, got {len(answers)} answers "
                         f"and {len(scores)} scores")
    score_of, count = {}, {}
    for answer, score in zip(answers, scores):
        score_of.setdefault(answer, round(float(score), 6))  # the same answer scored in two batches: one score
        count[answer] = count.get(answer, 0) + 1
    mass: dict[float, int] = {}
    for answer, c in count.items():
        mass[score_of[answer]] = mass.get(score_of[answer], 0) + c
    kl, below = 0.0, 0.0
    for score in sorted(mass):
        p = mass[score] / len(answers)
        kept = (below + p) ** n - below ** n
        if kept > 0:
            kl += kept * math.log(kept / p)
        below += p
    return kl


def best_of_n_sampled_kl(answers: list[str], scores: list[float], per_prompt: int, n: int) -> float:
    """:func:`best_of_n_kl_estimate` of each prompt's ``per_prompt`` consecutive answers, averaged over prompts."""
    starts = range(0, len(answers), per_prompt)
    return sum(best_of_n_kl_estimate(answers[i:i + per_prompt], scores[i:i + per_prompt], n)
               for i in starts) / len(starts)


def best_of_n(policy, tokenizer, reward_model, prompts: list[dict], *, max_n: int = 64, reward_tokenizer=None,
              seed: int = 0, max_new_tokens: int = 24, batch_size: int = 128, progress: bool = True) -> pd.DataFrame:
    """Best-of-n sampling for n = 1, 2, 4, …, ``max_n``: keep the answer the reward model scores highest.

    Samples ``max_n`` answers per prompt once; for each n they are cut into ``max_n / n`` groups of
    n, the reward model's favourite of each group is kept, and its proxy (reward-model) and gold
    rewards are averaged over groups and prompts. Returns one row per n: ``n``, ``proxy``,
    ``gold``, ``kl`` (KL to the policy in nats, :func:`best_of_n_kl_estimate` on each prompt's
    ``max_n`` answers, averaged over prompts) and ``kl_bound`` (log n − (n − 1)/n).
    """
    if max_n < 1 or max_n & (max_n - 1):
        raise ValueError(f"max_n must be a power of two >= 1, got {max_n}")
    samples = sample_answers(policy, tokenizer, prompts, n=max_n, seed=seed, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, progress=progress, desc="best-of-n: sampling")
    table = gold_table(samples)
    proxy = proxy_scores(reward_model, reward_tokenizer or tokenizer, samples).view(len(prompts), max_n)
    gold = torch.tensor(table["gold"].values, dtype=torch.float32).view(len(prompts), max_n)
    rows, n = [], 1
    while n <= max_n:
        groups_proxy, groups_gold = proxy.view(len(prompts), -1, n), gold.view(len(prompts), -1, n)
        pick = groups_proxy.argmax(-1, keepdim=True)
        rows.append({"n": n, "proxy": float(groups_proxy.gather(-1, pick).mean()),
                     "gold": float(groups_gold.gather(-1, pick).mean()),
                     "kl": best_of_n_sampled_kl(samples.answers, proxy.flatten().tolist(), max_n, n),
                     "kl_bound": best_of_n_kl(n)})
        n *= 2
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ verifiable problems

def shows_working(answer: str) -> bool:
    """Whether an answer to a word problem writes out at least one step (``7 + 5 = 12``) before its result.

    A crude test, an ``=`` anywhere: it says nothing of whether the steps are right
    (:func:`right_working` does)."""
    return "=" in answer


STEP = re.compile(r"(\d+)\s*([+-])\s*(\d+)\s*=\s*(\d+)")  # one written step of working: "7 + 5 = 12"


def working_steps(text: str) -> list[tuple[int, str, int, int]]:
    """The steps ``a ± b = c`` written in ``text``, in order, as ``(a, sign, b, c)``."""
    return [(int(a), sign, int(b), int(c)) for a, sign, b, c in STEP.findall(text)]


def right_working(answer: str, solution: str) -> bool:
    """Whether an answer writes out the problem's working, step for step and every step right: its
    steps are exactly those of the worked ``solution`` (the world's, :func:`labkit.world.problems.problem`),
    in order. A bare ``#### 9`` or a string of wrong sums fails, however many ``=`` it writes."""
    steps = working_steps(answer)
    return bool(steps) and steps == working_steps(solution)


@dataclass
class ProblemEvaluation:
    """A policy on held-out word problems: greedy and sampled exact-answer accuracy, and how it answers."""

    accuracy: float               # greedy answer's final number is right (share of problems)
    sampled_accuracy: float       # one answer sampled at temperature 1 per problem is right
    worked_share: float           # share of sampled answers that show working (an "=": :func:`shows_working`)
    length: float                 # mean words of the sampled answers
    answers: pd.DataFrame         # per problem: prompt, answer, greedy, sampled, right_greedy, right_sampled
    right_working_share: float | None = None  # sampled answers whose working is the solution's (:func:`right_working`)

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "sampled_accuracy": self.sampled_accuracy,
                "worked_share": self.worked_share, "right_working_share": self.right_working_share,
                "length": self.length}


def evaluate_problems(policy, tokenizer, rows: list[dict], *, max_new_tokens: int = 32, seed: int = 0,
                      batch_size: int = 128) -> ProblemEvaluation:
    """Exact-answer accuracy of ``policy`` on word problems ``rows`` (``prompt`` messages, ``answer``).

    The final number of each reply is read by :func:`labkit.rewards.extract_final_answer`, as
    GRPO's correctness reward reads it. Greedy decoding gives ``accuracy``; one answer sampled
    per problem at temperature 1 (the seed fixed) gives ``sampled_accuracy``, the share GRPO's
    training reward sees.
    """
    from labkit.models import generate_replies
    from labkit.rewards import extract_final_answer, same_number

    greedy = generate_replies(policy, tokenizer, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    sampled = sample_answers(policy, tokenizer, rows, n=1, seed=seed, max_new_tokens=max_new_tokens,
                             batch_size=batch_size).answers
    table = pd.DataFrame({"prompt": [r["prompt"][-1]["content"] for r in rows],
                          "answer": [str(r["answer"]) for r in rows], "greedy": greedy, "sampled": sampled})
    table["right_greedy"] = [same_number(extract_final_answer(g), a) for g, a in zip(greedy, table["answer"])]
    table["right_sampled"] = [same_number(extract_final_answer(s), a) for s, a in zip(sampled, table["answer"])]
    right_share = None
    if all("solution" in r for r in rows):  # the world's problems carry their worked solution
        table["right_working"] = [right_working(s, r["solution"]) for s, r in zip(sampled, rows)]
        right_share = float(table["right_working"].mean()) if len(rows) else None
    return ProblemEvaluation(accuracy=float(table["right_greedy"].mean()),
                             sampled_accuracy=float(table["right_sampled"].mean()),
                             worked_share=float(sum(map(shows_working, sampled)) / max(1, len(sampled))),
                             length=float(sum(len(s.split()) for s in sampled) / max(1, len(sampled))),
                             answers=table, right_working_share=right_share)
