"""PPO for language models: GAE, whitening, the KL penalty, the value loss, rollouts, and train_ppo itself."""
import copy
import dataclasses

import pytest
import torch

from labkit import evaluate, lora
from labkit.losses import gae_advantages, kl_penalty_rewards, masked_mean, ppo_value_loss, whiten
from labkit.models import build_model, tiny_llama_config
from labkit.presets import PPOStageConfig, get_preset
from labkit.train.ppo import PolicyWithValue, check_scores, pack_rollout, token_logprobs, train_ppo
from labkit.world import preferences as prefs

PROMPTS = prefs.alignment_prompts("train")
# The smoke preset's PPO stage, with answers of at most 6 tokens to keep the test short.
CONFIG = PPOStageConfig(iterations=3, prompts_per_batch=4, samples_per_prompt=2, max_new_tokens=6, ppo_epochs=1,
                        minibatch_size=4, eval_every=2, eval_samples=1, final_eval_samples=1, lora_rank=0)  # full

pytestmark = pytest.mark.usefixtures("one_thread")


def _policy(tok, seed=0):
    """A really tiny Llama (one layer, d_model 16: about 9k parameters) on the test tokenizer."""
    return build_model(tiny_llama_config(len(tok), 16, 1, 2, 32, 64, tok), seed=seed)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ the maths


def test_masked_mean_ignores_padding():
    values = torch.tensor([[1.0, 2.0, 100.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0  # an empty mask gives 0, not NaN


# Row 0: one answer of 3 tokens. Row 1: an answer of 2 tokens, the third column is padding holding
# garbage (99, 7) that must neither show up nor leak into the real tokens.
REWARDS = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 99.0]])
VALUES = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 7.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])


def test_gae_by_hand_gamma_1_lambda_095():
    advantages, returns = gae_advantages(REWARDS, VALUES, MASK, gamma=1.0, lam=0.95)
    # Row 0, δ_t = r_t + V_{t+1} − V_t (V after the last token is 0):
    #   δ_2 = 1 + 0 − 0.4 = 0.6      A_2 = 0.6
    #   δ_1 = 0 + 0.4 − 0.2 = 0.2    A_1 = 0.2 + 0.95·0.6 = 0.77
    #   δ_0 = 0 + 0.2 − 0.5 = −0.3   A_0 = −0.3 + 0.95·0.77 = 0.4315
    # Row 1 ends at t = 1 (the padding's value 7 is not V_2: the episode is over):
    #   δ_1 = 2 + 0 − 0.3 = 1.7      A_1 = 1.7
    #   δ_0 = 0.5 + 0.3 − 0.1 = 0.7  A_0 = 0.7 + 0.95·1.7 = 2.315
    expected = torch.tensor([[0.4315, 0.77, 0.6], [2.315, 1.7, 0.0]])
    torch.testing.assert_close(advantages, expected, atol=1e-6, rtol=0)
    # returns R_t = A_t + V_t: 0.4315 + 0.5, 0.77 + 0.2, 0.6 + 0.4; 2.315 + 0.1, 1.7 + 0.3; padding 0
    torch.testing.assert_close(returns, torch.tensor([[0.9315, 0.97, 1.0], [2.415, 2.0, 0.0]]), atol=1e-6, rtol=0)
    assert advantages[1, 2] == 0 and returns[1, 2] == 0


def test_gae_gamma_09_lambda_0_is_the_one_step_td_error():
    advantages, returns = gae_advantages(REWARDS, VALUES, MASK, gamma=0.9, lam=0.0)
    # A_t = δ_t = r_t + 0.9·V_{t+1} − V_t
    #   row 0: 0 + 0.9·0.2 − 0.5 = −0.32,  0 + 0.9·0.4 − 0.2 = 0.16,  1 + 0 − 0.4 = 0.6
    #   row 1: 0.5 + 0.9·0.3 − 0.1 = 0.67,  2 + 0 − 0.3 = 1.7,  padding 0
    expected = torch.tensor([[-0.32, 0.16, 0.6], [0.67, 1.7, 0.0]])
    torch.testing.assert_close(advantages, expected, atol=1e-6, rtol=0)
    # R_t = r_t + 0.9·V_{t+1}: −0.32 + 0.5 = 0.18, 0.16 + 0.2 = 0.36, 1.0; 0.77, 2.0
    torch.testing.assert_close(returns, torch.tensor([[0.18, 0.36, 1.0], [0.77, 2.0, 0.0]]), atol=1e-6, rtol=0)


def test_gae_padding_does_not_leak():
    other_rewards, other_values = REWARDS.clone(), VALUES.clone()
    other_rewards[1, 2], other_values[1, 2] = -1e6, 1e6
    for gamma, lam in [(1.0, 0.95), (0.9, 0.0), (0.99, 1.0)]:
        a, r = gae_advantages(REWARDS, VALUES, MASK, gamma, lam)
        b, s = gae_advantages(other_rewards, other_values, MASK, gamma, lam)
        assert torch.equal(a, b) and torch.equal(r, s)
    # and a row alone gives what it gives in the batch
    alone, _ = gae_advantages(REWARDS[1:, :2], VALUES[1:, :2], MASK[1:, :2], 1.0, 0.95)
    torch.testing.assert_close(alone, torch.tensor([[2.315, 1.7]]), atol=1e-6, rtol=0)


def test_whiten_masked_entries_to_mean_0_std_1_and_padding_stays_0():
    # Real entries 1, 3, 5, 7: mean 4, deviations −3, −1, 1, 3, population variance (9+1+1+9)/4 = 5.
    values = torch.tensor([[1.0, 3.0, 5.0], [7.0, 100.0, -100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = whiten(values, mask)
    s = 5 ** 0.5
    torch.testing.assert_close(out, torch.tensor([[-3 / s, -1 / s, 1 / s], [3 / s, 0.0, 0.0]]), atol=1e-6, rtol=0)
    real = out[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)  # population std, not n − 1
    assert out[1, 1] == 0 and out[1, 2] == 0
    kept = whiten(values, mask, shift_mean=False)
    torch.testing.assert_close(kept, torch.tensor([[4 - 3 / s, 4 - 1 / s, 4 + 1 / s], [4 + 3 / s, 0.0, 0.0]]),
                               atol=1e-6, rtol=0)
    assert kept[mask.bool()].mean().item() == pytest.approx(4.0, abs=1e-6)


def test_kl_penalty_rewards_per_token_with_the_score_on_the_last_real_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.25, -1.25, 0.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-0.5, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # row 1's answer has 2 tokens, then padding
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalty_rewards(scores, logprobs, ref_logprobs, mask, beta=0.1)
    # log-ratios: row 0: −1 − (−1.5) = 0.5, −2 − (−1) = −1, 0; row 1: 0.25, −0.25, padding 0
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0], [0.25, -0.25, 0.0]]), atol=1e-6, rtol=0)
    # −0.1·kl, plus the score on the last real token (column 2 in row 0, column 1 in row 1):
    #   row 0: −0.05, 0.1, 0 + 2 = 2;  row 1: −0.025, 0.025 − 1 = −0.975, padding 0
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.025, -0.975, 0.0]]), atol=1e-6, rtol=0)
    # summed over an answer: score − β·(sequence log-ratio)
    torch.testing.assert_close(rewards.sum(-1), scores - 0.1 * kl.sum(-1), atol=1e-6, rtol=0)
    # β = 0: only the scores, at the end of each answer
    plain, _ = kl_penalty_rewards(scores, logprobs, ref_logprobs, mask, beta=0.0)
    torch.testing.assert_close(plain, torch.tensor([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]), atol=0, rtol=0)
    with pytest.raises(ValueError, match="beta"):
        kl_penalty_rewards(scores, logprobs, ref_logprobs, mask, beta=-0.1)


def test_value_loss_takes_the_larger_clipped_term():
    # Element 0: V = 1.0 moved up from V_old = 0.5; with clip 0.2, V_clip = 0.7. Return R = 2:
    #   (V − R)² = 1, (V_clip − R)² = 1.3² = 1.69  → the clipped term is larger: 1.69
    # Element 1: V = 0.0 from V_old = 0.5, V_clip = 0.3. Return R = 1:
    #   (V − R)² = 1, (V_clip − R)² = 0.7² = 0.49  → the unclipped term: 1
    # Element 2 is padding. Loss = ½·(1.69 + 1)/2 = 0.6725
    values = torch.tensor([[1.0, 0.0, 50.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.0]])
    returns = torch.tensor([[2.0, 1.0, -50.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss = ppo_value_loss(values, old, returns, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.6725, abs=1e-6)
    loss.backward()
    # the clipped term is flat in V (V_clip is pinned at V_old + 0.2): no gradient; element 1: (V − R)/2 = −0.5
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.5, 0.0]]), atol=1e-6, rtol=0)
    # with a wide clip both terms agree: ½·(1 + 1)/2 = 0.5
    assert ppo_value_loss(values, old, returns, mask, clip=10.0).item() == pytest.approx(0.5, abs=1e-6)


def test_check_scores():
    out = check_scores([1, 2.5], 2)
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([1.0, 2.5]))
    with pytest.raises(ValueError, match=r"shape \(2, 1\) for 2 answers"):
        check_scores(torch.zeros(2, 1), 2)
    with pytest.raises(ValueError, match=r"shape \(3,\) for 2 answers"):
        check_scores(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="NaN or infinite scores for 1 of 3 answers .first at index 1"):
        check_scores([0.0, float("nan"), 1.0], 3)
    with pytest.raises(ValueError, match="NaN or infinite scores for 2 of 3 answers .first at index 0"):
        check_scores([float("inf"), 0.0, float("-inf")], 3)


def test_ppo_config_validation_names_the_field():
    for field, bad in [("eps", 0.0), ("eps", 1.0), ("eps", 1.5), ("beta", -0.01), ("lam", 1.01),
                       ("lam", -0.1), ("gamma", 1.5), ("lora_rank", -1), ("iterations", 0), ("lr", 0.0)]:
        with pytest.raises(ValueError, match=f"PPOStageConfig.*{field}"):
            PPOStageConfig(**{field: bad})
    PPOStageConfig(eps=0.5, beta=0.0, lam=1.0, gamma=0.0, lora_rank=0)  # edges that are allowed
    smoke = get_preset("smoke").ppo
    assert (smoke.iterations, smoke.prompts_per_batch, smoke.samples_per_prompt, smoke.max_new_tokens,
            smoke.ppo_epochs, smoke.minibatch_size) == (3, 4, 2, 8, 1, 4)
    assert smoke.lora_rank == get_preset("cpu").ppo.lora_rank == 8 and 0 < smoke.eps < 1  # smoke runs the cpu recipe


# ------------------------------------------------------------------------------------ models and rollouts


def test_lora_reference_with_adapters_off_reproduces_the_sft_logits_exactly():
    sft = build_model(tiny_llama_config(50, 32, 2, 2, 64, 32), seed=0).eval()
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1))
    peft_model = lora.peft_lora(copy.deepcopy(sft), rank=4).eval()
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # adapters now change the model
        expected = sft(input_ids=ids).logits
        with_adapters = peft_model(input_ids=ids).logits
        assert (with_adapters - expected).abs().max() > 1e-2
        with peft_model.disable_adapter():
            assert torch.equal(peft_model(input_ids=ids).logits, expected)
        assert torch.equal(peft_model(input_ids=ids).logits, with_adapters)  # back on after the context


def test_policy_with_value_starts_at_v_0_and_keeps_the_lm_logits(tok):
    lm = _policy(tok).eval()
    model = PolicyWithValue(lm)
    ids = torch.randint(0, len(tok), (2, 5), generator=torch.Generator().manual_seed(0))
    attn, pos = torch.ones_like(ids), torch.arange(5).expand(2, 5)
    with torch.no_grad():
        logits, values = model(ids, attn, pos)
        assert torch.equal(logits, lm(input_ids=ids).logits)
    assert values.shape == (2, 5) and torch.equal(values, torch.zeros(2, 5))


def _mixed_samples(model, tok):
    """Sampled answers to prompts of 11, 12 and 14 tokens, some 3 tokens long, some 6."""
    rows = PROMPTS[:3]
    short = evaluate.sample_answers(model, tok, rows, n=2, seed=0, max_new_tokens=3)
    long = evaluate.sample_answers(model, tok, rows, n=2, seed=1, max_new_tokens=6)
    return evaluate.Samples(prompts=short.prompts + long.prompts, answers=short.answers + long.answers,
                            prompt_ids=short.prompt_ids + long.prompt_ids,
                            answer_ids=short.answer_ids + long.answer_ids)


def test_pack_rollout_layout(tok):
    samples = _mixed_samples(_policy(tok).eval(), tok)
    rollout = pack_rollout(samples, tok.pad_token_id, "cpu")
    P, T = max(map(len, samples.prompt_ids)), max(map(len, samples.answer_ids))
    assert rollout.prompt_width == P and rollout.input_ids.shape == (len(samples.answers), P + T)
    for i, (p, a) in enumerate(zip(samples.prompt_ids, samples.answer_ids)):
        assert rollout.input_ids[i, P - len(p):P].tolist() == p  # prompt left-padded to P
        assert rollout.answer_ids[i, :len(a)].tolist() == a and rollout.mask[i].sum() == len(a)
        real = rollout.attention_mask[i].bool()
        assert rollout.position_ids[i][real].tolist() == list(range(len(p) + len(a)))  # real tokens count 0, 1, …


def test_packed_logprobs_equal_sequence_logprobs_with_natural_positions(tok):
    model = _policy(tok).eval()
    samples = _mixed_samples(model, tok)
    assert len(set(map(len, samples.prompt_ids))) == 3 and len(set(map(len, samples.answer_ids))) >= 2
    rollout = pack_rollout(samples, tok.pad_token_id, "cpu")
    with torch.no_grad():
        logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                       position_ids=rollout.position_ids).logits
    logp, entropy = token_logprobs(logits, rollout)
    packed = (logp * rollout.mask).sum(-1)
    expected = evaluate.sequence_logprobs(model, samples)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)
    assert (packed < 0).all()
    # a uniform-ish random model: entropies are positive and below log(vocabulary)
    real = entropy[rollout.mask]
    assert (real > 0).all() and (real <= torch.log(torch.tensor(float(len(tok)))) + 1e-4).all()
    # a subset of rows (a minibatch) gives those rows' numbers
    index = torch.tensor([4, 1])
    with torch.no_grad():
        sub_logits = model(input_ids=rollout.input_ids[index], attention_mask=rollout.attention_mask[index],
                           position_ids=rollout.position_ids[index]).logits
    sub, _ = token_logprobs(sub_logits, rollout, index)
    torch.testing.assert_close(sub, logp[index], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ train_ppo


def _run(tok, policy, config=CONFIG, reward_fn=evaluate.gold_reward_fn, **kwargs):
    return train_ppo(policy, tok, PROMPTS, reward_fn, config, seed=0, progress=False, **kwargs)


@pytest.fixture(scope="module")
def full_runs(tok):
    """Two full fine-tuning runs from the same starting weights and seed."""
    start = _policy(tok)
    initial = _weights(start)
    lengths, evals = [], []

    def eval_fn(policy):
        evals.append(policy)
        return {"gold": 1.5}

    policy = copy.deepcopy(start)
    first = _run(tok, policy, eval_fn=eval_fn, callback=lambda history: lengths.append(len(history)))
    second = _run(tok, copy.deepcopy(start))
    return {"initial": initial, "policy": policy, "first": first, "second": second, "callback_lengths": lengths,
            "evaluated": evals}


def test_train_ppo_changes_the_policy_and_logs_one_row_per_iteration(full_runs):
    initial, first = full_runs["initial"], full_runs["first"]
    assert first.policy is full_runs["policy"]  # trained in place
    final = _weights(first.policy)
    assert final.keys() == initial.keys()
    assert not _same_weights(final, initial)
    assert all(torch.isfinite(v).all() for v in final.values())
    # row 0: the evaluation before training (held-out numbers only); then one row per iteration
    assert first.steps == 3 and len(first.history) == 4
    assert first.history[0] == {"step": 0, "heldout_gold": 1.5}
    rows = first.history[1:]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert {"proxy", "kl", "clip_fraction", "entropy", "value_loss", "objective", "policy_loss"} <= row.keys()
        assert all(isinstance(row[k], float) and row[k] == row[k] for k in ("proxy", "kl", "entropy", "value_loss"))
        assert 0.0 <= row["clip_fraction"] <= 1.0 and row["entropy"] > 0
        assert row["objective"] == pytest.approx(row["proxy"] - CONFIG.beta * row["kl"])
    # the first rollout is sampled from the reference itself: zero KL; after updates the policy has left it
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert all(abs(row["kl"]) > 1e-5 for row in rows[1:])
    # held-out evaluation before training, every 2 iterations and at the end, of the policy being trained
    assert ["heldout_gold" in row for row in rows] == [False, True, True]
    assert rows[1]["heldout_gold"] == 1.5
    assert [e["step"] for e in first.evaluations] == [0, 2, 3]
    assert len(full_runs["evaluated"]) == 3 and all(p is first.policy for p in full_runs["evaluated"])
    assert full_runs["callback_lengths"] == [1, 2, 3, 4]
    assert first.sampled_tokens > 0 and first.sampled_tokens <= 3 * 8 * CONFIG.max_new_tokens
    assert first.trainable_parameters == sum(p.numel() for p in first.policy.parameters()) + 16 + 1  # + value head


def test_train_ppo_is_deterministic_for_a_seed(full_runs):
    first, second = full_runs["first"], full_runs["second"]
    drop = {"heldout_gold"}  # only the first run was given an eval_fn
    assert [{k: v for k, v in r.items() if k not in drop} for r in first.history[1:]] == second.history
    assert _same_weights(_weights(first.policy), _weights(second.policy))


def test_train_ppo_with_lora_returns_a_merged_plain_model(tok, full_runs):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    start = _policy(tok)
    initial = _weights(start)
    config = dataclasses.replace(CONFIG, lora_rank=2)
    result = _run(tok, start, config)
    policy = result.policy
    assert type(policy) is LlamaForCausalLM and not isinstance(policy, PeftModel)
    assert not any("lora" in name for name, _ in policy.named_parameters())
    final = _weights(policy)
    assert final.keys() == initial.keys()
    assert not _same_weights(final, initial)
    assert all(torch.isfinite(v).all() for v in final.values())
    assert len(result.history) == 3
    # the reference is the base with adapters off: equal to the policy while B = 0, then not
    assert result.history[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert all(abs(row["kl"]) > 1e-4 for row in result.history[1:])
    full = full_runs["first"].trainable_parameters
    # rank-2 adapters on 7 linears of 1 layer: q, k, v, o (16→16): 4·2·32; gate, up (16→32), down: 3·2·48
    assert result.trainable_parameters == 4 * 2 * 32 + 3 * 2 * 48 + 17
    assert result.trainable_parameters < full / 10


@pytest.mark.parametrize("bad, message", [
    (lambda rows, answers: torch.zeros(len(answers), 1), r"shape \(8, 1\) for 8 answers"),
    (lambda rows, answers: torch.full((len(answers),), float("nan")), "NaN"),
])
def test_train_ppo_rejects_a_bad_reward_function(tok, bad, message):
    policy = _policy(tok)
    initial = _weights(policy)
    with pytest.raises(ValueError, match=message):
        _run(tok, policy, reward_fn=bad)
    assert _same_weights(_weights(policy), initial)  # stopped before any update


# ------------------------------------------------------------------------------------ memory

def test_ppo_memory_plan_for_a_7b_model():
    from labkit.metrics import ppo_memory_plan

    plan = ppo_memory_plan(7e9, 40e6)
    totals = plan.groupby("layout")["GB"].sum()
    # full: 2 trained copies x 7e9 x 12 bytes + 2 frozen copies x 7e9 x 2 bytes
    assert totals["full copies"] == pytest.approx(2 * 84 + 2 * 14) == 196
    # LoRA: one frozen base + 2 x 40e6 adapters x 12 bytes + the frozen reward model
    assert totals["LoRA, one shared base"] == pytest.approx(14 + 2 * 0.48 + 14)
    # lab 05: with an fp32 master copy of each trained weight (mixed precision), 16 bytes per trained parameter
    master = ppo_memory_plan(7e9, 40e6, optimiser_bytes=12).groupby("layout")["GB"].sum()
    assert master["full copies"] == pytest.approx(2 * 7e9 * 16 / 1e9 + 2 * 14) == pytest.approx(252)
    assert master["LoRA, one shared base"] == pytest.approx(14 + 2 * 0.64 + 14) == pytest.approx(29.28)


def test_ppo_step_memory_full_vs_lora_in_fresh_processes():
    from labkit import bench, pipeline

    smoke = get_preset("smoke")
    pipeline.ensure("reward", smoke, progress=False)  # the child processes find it in the cache
    full, lora = bench.ppo_memory("smoke", ranks=(0, 2))
    sft, _, _ = pipeline.load("sft", smoke)
    reward_model, _, _ = pipeline.load("reward", smoke)
    n, hidden, rm = (sum(p.numel() for p in sft.parameters()), sft.config.hidden_size,
                     sum(p.numel() for p in reward_model.parameters()))
    assert full["trainable_parameters"] == n + hidden + 1              # the policy and its value head
    assert full["parameters_in_memory"] == 2 * n + hidden + 1 + rm     # + the reference copy + the reward model
    adapters = lora["trainable_parameters"] - hidden - 1
    assert 0 < adapters < n / 2
    assert lora["parameters_in_memory"] == n + adapters + hidden + 1 + rm  # one shared base
    assert lora["state_MB"] < full["state_MB"]
    assert full["added_MB"] > 0 and lora["added_MB"] > 0 and full["measure"] == "peak resident memory (RSS)"
