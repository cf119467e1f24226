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


def test_a_policy_judged_against_itself_meets_independent_answers_and_has_zero_kl(tok):
    model = _policy(tok, 0)
    result = evaluate.evaluate_policy(model, tok, PROMPTS, model, samples_per_prompt=8, seed=0,
                                      max_new_tokens=6, progress=False)
    answers = result.answers
    assert result.kl == pytest.approx(0.0, abs=1e-6)
    # the reference's answers are drawn independently: the same seed would have given the same answers
    same_seed = evaluate.sample_answers(model, tok, PROMPTS, n=8, seed=0, max_new_tokens=6).answers
    assert same_seed == answers["answer"].tolist()
    assert (answers["answer"] != answers["reference answer"]).mean() > 0.5
    assert result.win_rate == win_rate(answers["gold"].tolist(), answers["reference gold"].tolist())
    again = evaluate.evaluate_policy(model, tok, PROMPTS, model, samples_per_prompt=8, seed=0, max_new_tokens=6,
                                     progress=False).answers
    assert again["reference answer"].tolist() == answers["reference answer"].tolist()  # same seed, same reference
    assert len(answers) == 8 * len(PROMPTS)
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


def test_best_of_n_kl_estimate_approaches_the_bound_when_answers_never_repeat():
    answers = [f"answer {i}" for i in range(4096)]
    scores = torch.randn(4096, generator=torch.Generator().manual_seed(0)).tolist()
    for n in (1, 2, 8, 64):
        estimate = evaluate.best_of_n_kl_estimate(answers, scores, n)
        assert estimate <= evaluate.best_of_n_kl(n) + 1e-12
        assert estimate == pytest.approx(evaluate.best_of_n_kl(n), abs=0.01)


def test_best_of_n_kl_stays_below_log_2_for_two_equally_likely_answers():
    # Beirami et al.'s counterexample: best-of-n can only move all the mass onto the better answer
    answers, scores = ["good", "bad"] * 50, [1.0, 0.0] * 50
    for n in (2, 8, 32):
        worse = 0.5 ** n  # the worse answer is kept only when all n draws are the worse one
        exact = (1 - worse) * math.log((1 - worse) / 0.5) + worse * math.log(worse / 0.5)
        assert evaluate.best_of_n_kl_estimate(answers, scores, n) == pytest.approx(exact)
        assert exact < math.log(2)
    assert evaluate.best_of_n_kl(8) > math.log(2)  # the formula overshoots


def test_best_of_n_kl_estimate_matches_simulated_best_of_n():
    # five answers of unequal probability (one tie in score between two of them): draw n, keep the
    # best by score, many times, and compare the simulated KL with the formula's
    gen = torch.Generator().manual_seed(0)
    answers = ["a"] * 40 + ["b"] * 25 + ["c"] * 20 + ["d"] * 10 + ["e"] * 5
    score = {"a": 0.0, "b": 2.0, "c": 1.0, "d": 1.0, "e": 3.0}
    n, trials = 3, 200_000
    draws = torch.randint(0, len(answers), (trials, n), generator=gen)
    by_score = torch.tensor([score[a] for a in answers])
    picked = by_score[draws].max(-1).values
    p = {s: sum(score[a] == s for a in answers) / len(answers) for s in set(score.values())}
    simulated = sum(float((picked == s).float().mean()) * math.log(float((picked == s).float().mean()) / q)
                    for s, q in p.items() if (picked == s).any())
    estimate = evaluate.best_of_n_kl_estimate(answers, [score[a] for a in answers], n)
    assert estimate == pytest.approx(simulated, abs=0.01)
    assert 0 < estimate < evaluate.best_of_n_kl(n)
    with pytest.raises(ValueError, match="one score per answer"):
        evaluate.best_of_n_kl_estimate(["a"], [], 2)


def test_best_of_n_table_has_one_row_per_power_of_two_and_proxy_never_falls(tok):
    policy = _policy(tok, 0)
    config = tiny_llama_config(len(tok), 32, 1, 2, 64, 64, tok)
    config.num_labels = 1
    torch.manual_seed(0)
    reward_model = LlamaForSequenceClassification(config).eval()
    table = evaluate.best_of_n(policy, tok, reward_model, PROMPTS, max_n=8, max_new_tokens=6, progress=False)
    assert list(table.columns) == ["n", "proxy", "gold", "kl", "kl_bound"] and table["n"].tolist() == [1, 2, 4, 8]
    assert table["kl_bound"].tolist() == pytest.approx([evaluate.best_of_n_kl(n) for n in (1, 2, 4, 8)])
    # the KL on the answers drawn: 0 at n = 1, growing with n, never above the bound
    assert table["kl"].iloc[0] == 0.0 and table["kl"].is_monotonic_increasing
    assert (table["kl"] <= table["kl_bound"] + 1e-12).all() and table["kl"].iloc[-1] > 0
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


def test_working_is_right_only_when_it_is_the_problems_own_steps():
    from labkit.world import problems

    row = problems.problem("test", 3)
    solution = row["solution"]
    steps = evaluate.working_steps(solution)
    assert len(steps) == row["steps"] and all(c == (a + b if s == "+" else a - b) for a, s, b, c in steps)
    assert evaluate.right_working(solution, solution)
    assert not evaluate.right_working(f"#### {row['answer']}", solution)       # the bare answer: no working
    first = "{} {} {} = {} .".format(*steps[0])
    assert not evaluate.right_working(first + f" #### {row['answer']}", solution)  # only the first step
    a, s, b, c = steps[0]
    wrong = solution.replace(f"{a} {s} {b} = {c}", f"{a} {s} {b} = {c + 1}", 1)
    assert evaluate.shows_working(wrong) and not evaluate.right_working(wrong, solution)  # a wrong sum
    assert evaluate.shows_working("= = =") and not evaluate.right_working("= = =", solution)  # "=" is not working


def test_evaluate_problems_counts_answers_whose_working_is_right(tok):
    from labkit.world import problems

    rows = problems.problems("test", 4)
    policy = _policy(tok, 0)
    judged = evaluate.evaluate_problems(policy, tok, rows, max_new_tokens=4)
    table = judged.answers
    assert table["right_working"].tolist() == [evaluate.right_working(s, r["solution"])
                                               for s, r in zip(table["sampled"], rows)]
    assert judged.right_working_share == table["right_working"].mean()
    assert judged.summary()["right_working_share"] == judged.right_working_share
    bare = [{k: v for k, v in r.items() if k != "solution"} for r in rows]  # rows without a worked solution
    assert evaluate.evaluate_problems(policy, tok, bare, max_new_tokens=4).right_working_share is None
