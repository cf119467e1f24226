"""Judging a policy: deterministic sampling, the KL estimate against an exact enumeration, win rates, best-of-n."""
import math

import pandas as pd
import pytest
import torch
from transformers import LlamaForSequenceClassification

from labkit import evaluate, world
from labkit.metrics import win_rate
from labkit.models import build_model, stop_token_ids, tiny_llama_config
from labkit.tokenizer import train_tokenizer
from labkit.world import preferences as prefs


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer((d.text for d in world.corpus("train", 50)), extra_words=world.vocabulary())


def _policy(tok, seed, sharpness=1.0):
    """A tiny random Llama; ``sharpness`` scales the final norm, so its next-token distributions are peaked."""
    model = build_model(tiny_llama_config(len(tok), 32, 1, 2, 64, 64, tok), seed=seed)
    with torch.no_grad():
        model.model.norm.weight.mul_(sharpness)
    return model.eval()


PROMPTS = prefs.alignment_prompts("heldout")[:6]


def test_sampling_is_deterministic_for_a_seed_and_leaves_the_callers_rng_alone(tok):
    model = _policy(tok, 0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = evaluate.sample_answers(model, tok, PROMPTS, n=3, seed=7, max_new_tokens=6)
    assert torch.rand(1) == before  # sampling ran in a forked random state
    b = evaluate.sample_answers(model, tok, PROMPTS, n=3, seed=7, max_new_tokens=6)
    c = evaluate.sample_answers(model, tok, PROMPTS, n=3, seed=8, max_new_tokens=6)
    assert a.answer_ids == b.answer_ids and a.answers == b.answers
    assert a.answer_ids != c.answer_ids
    assert [r["id"] for r in a.prompts] == [p["id"] for p in PROMPTS for _ in range(3)]
    first = evaluate.evaluate_policy(model, tok, PROMPTS, _policy(tok, 1), samples_per_prompt=2, seed=3,
                                     max_new_tokens=6, progress=False)
    again = evaluate.evaluate_policy(model, tok, PROMPTS, _policy(tok, 1), samples_per_prompt=2, seed=3,
                                     max_new_tokens=6, progress=False)
    assert first.row().equals(again.row())


def _exact_kl_two_tokens(policy, reference, tok, prompt):
    """KL(π ‖ π_ref) over every answer of at most two tokens (stop after one, or any two), by enumeration."""
    stop = set(stop_token_ids(tok))
    text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    vocab = len(tok)
    with torch.no_grad():
        first = [m(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1) for m in (policy, reference)]
        # every one-token continuation at once: row a is prompt + a
        batch = torch.tensor([ids + [a] for a in range(vocab)])
        second = [m(input_ids=batch).logits[:, -1].log_softmax(-1) for m in (policy, reference)]
    p1, q1 = first
    p2, q2 = second
    kl = 0.0
    for a in range(vocab):
        term = float(p1[a] - q1[a])
        if a not in stop:  # the answer goes on to a second token
            term += float((p2[a].exp() * (p2[a] - q2[a])).sum())
        kl += float(p1[a].exp()) * term
    return kl, p1, p2


def test_kl_estimate_agrees_with_the_exact_kl_by_enumeration(tok):
    policy, reference = _policy(tok, 0, sharpness=6.0), _policy(tok, 1, sharpness=6.0)
    prompt = PROMPTS[:1]
    exact, p1, p2 = _exact_kl_two_tokens(policy, reference, tok, prompt[0]["prompt"])
    samples = evaluate.sample_answers(policy, tok, prompt, n=4000, seed=0, max_new_tokens=2, batch_size=1000)
    # the scorer gives each sample exactly the log-probability the enumeration gives it
    logp = evaluate.sequence_logprobs(policy, samples)
    for answer, value in list(zip(samples.answer_ids, logp))[:50]:
        expected = p1[answer[0]] + (p2[answer[0], answer[1]] if len(answer) == 2 else 0.0)
        assert float(value) == pytest.approx(float(expected), abs=1e-4)
    log_ratio = logp - evaluate.sequence_logprobs(reference, samples)
    estimate = evaluate.kl_estimate(log_ratio)
    # Monte-Carlo error: the estimate is a mean of 4,000 independent log-ratios, so its standard
    # error is their standard deviation / sqrt(4000); 4 standard errors is a miss with p < 1e-4.
    standard_error = float(log_ratio.std()) / math.sqrt(len(log_ratio))
    assert exact > 0.5  # the two models really differ, so agreeing is not trivial
    assert standard_error < 0.1 * exact
    assert abs(estimate - exact) < 4 * standard_error


def test_win_rate_counts_ties_as_one_half():
    assert win_rate([1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 4.0, 0.0]) == pytest.approx((0.5 + 1 + 0 + 0.5) / 4)
    assert win_rate([2.0], [1.0]) == 1.0 and win_rate([1.0], [2.0]) == 0.0


def test_a_policy_judged_against_itself_ties_everywhere_and_has_zero_kl(tok):
    model = _policy(tok, 0)
    result = evaluate.evaluate_policy(model, tok, PROMPTS, model, samples_per_prompt=2, seed=0,
                                      max_new_tokens=6, progress=False)
    assert result.win_rate == 0.5 and result.kl == pytest.approx(0.0, abs=1e-6)
    answers = result.answers
    assert len(answers) == 2 * len(PROMPTS)
    assert result.gold_reward == pytest.approx(answers["gold"].mean())
    assert result.gold_reward == pytest.approx(result.helpfulness + result.safety)
    assert result.distinct == answers["answer"].nunique() / len(answers)
    assert result.length == pytest.approx(answers["answer"].str.split().str.len().mean())
    row = result.row()
    assert row.name == "policy" and row["kl"] == result.kl and pd.isna(row["proxy_reward"])


def test_best_of_n_kl_formula():
    assert evaluate.best_of_n_kl(1) == 0.0
    assert evaluate.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert evaluate.best_of_n_kl(64) == pytest.approx(math.log(64) - 63 / 64)
    with pytest.raises(ValueError, match="n >= 1"):
        evaluate.best_of_n_kl(0)


def test_best_of_n_table_has_one_row_per_power_of_two_and_proxy_never_falls(tok):
    policy = _policy(tok, 0)
    config = tiny_llama_config(len(tok), 32, 1, 2, 64, 64, tok)
    config.num_labels = 1
    torch.manual_seed(0)
    reward_model = LlamaForSequenceClassification(config).eval()
    table = evaluate.best_of_n(policy, tok, reward_model, PROMPTS, max_n=8, max_new_tokens=6, progress=False)
    assert list(table.columns) == ["n", "proxy", "gold", "kl"] and table["n"].tolist() == [1, 2, 4, 8]
    assert table["kl"].tolist() == pytest.approx([evaluate.best_of_n_kl(n) for n in (1, 2, 4, 8)])
    # the best of 2n answers scores at least as high as the best of either half
    assert table["proxy"].is_monotonic_increasing and table["proxy"].iloc[-1] > table["proxy"].iloc[0]
    everything = evaluate.evaluate_policy(policy, tok, PROMPTS, samples_per_prompt=8, max_new_tokens=6,
                                          progress=False)
    assert table["gold"].iloc[0] == pytest.approx(everything.gold_reward)  # n = 1: every sample counts
    with pytest.raises(ValueError, match="power of two"):
        evaluate.best_of_n(policy, tok, reward_model, PROMPTS, max_n=6)


def test_best_of_n_figure_draws_gold_and_proxy_against_kl():
    from labkit import plots

    table = pd.DataFrame({"n": [1, 2, 4], "proxy": [0.1, 0.4, 0.6], "gold": [-0.3, 0.1, 0.2],
                          "kl": [evaluate.best_of_n_kl(n) for n in (1, 2, 4)]})
    fig = plots.best_of_n_figure(table, best=3.25)
    gold, proxy = fig.data
    assert list(gold.y) == [-0.3, 0.1, 0.2] and list(proxy.y) == [0.1, 0.4, 0.6] and proxy.yaxis == "y2"
    assert list(gold.x) == pytest.approx(table["kl"].tolist())
    assert "nats" in fig.layout.xaxis.title.text and fig.layout.yaxis2.title.text
