"""LoRA: the lecture's matrices, parameter counts, our from-scratch layer, peft and merging."""
import pytest
import torch

from labkit import lora
from labkit.models import build_model, count_parameters, tiny_llama_config


def test_lecture_matrices_exactly():
    ex = lora.lecture_example()
    B = torch.tensor([[-0.13, -0.24, 0.05, 0.38], [-0.07, -0.15, 0.04, 0.23], [0.39, 0.18, 0.19, -0.48],
                      [-0.18, 0.27, -0.31, -0.21], [0.33, 0.09, 0.2, -0.33]], dtype=torch.float64)
    torch.testing.assert_close(ex["B"], B, atol=1e-12, rtol=0)
    torch.testing.assert_close(ex["C"], torch.tensor([-0.085, 0.138, -0.153, -0.112], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    assert ex["full_parameters"] == 20 and ex["lora_parameters"] == 18


def test_parameter_counts_at_4096():
    counts = lora.lora_parameter_counts(4096, 4096, 8)
    assert counts["full"] == 16_777_216 and counts["lora"] == 65_536 and counts["ratio"] == 1 / 256
    assert lora.lora_parameter_counts(5, 4, 2)["lora"] == 18
    for bad in [(5, 4, 0), (5, 4, 5), (-1, 4, 1)]:
        with pytest.raises(ValueError):
            lora.lora_parameter_counts(*bad)


def _tiny():
    return build_model(tiny_llama_config(50, 32, 2, 2, 64, 32), seed=0)


def test_lora_linear_starts_as_the_base_and_merges_exactly():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 3)
    layer = lora.LoRALinear(base, rank=2)
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), base(x))
    with torch.no_grad():
        layer.lora_B.normal_()
    assert not torch.allclose(layer(x), base(x))
    torch.testing.assert_close(layer.merge()(x), layer(x), atol=1e-6, rtol=1e-6)  # float32 rounding only
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]


def test_add_lora_trains_only_the_adapters():
    model = lora.add_lora(_tiny(), rank=4, target=("q_proj", "v_proj"))
    # 2 layers × (q: 32→32, v: 32→32) × 4·(32 + 32)
    assert lora.trainable_parameters(model) == 2 * 2 * 4 * (32 + 32)


def test_peft_lora_counts_and_merge_agree_within_1e_5():
    model = _tiny()
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1))
    peft_model = lora.peft_lora(model, rank=4)
    expected = sum(4 * (m.in_features + m.out_features) for name, m in _tiny().named_modules()
                   if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in lora.ALL_LINEAR)
    assert count_parameters(peft_model, trainable_only=True) == expected
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.eval()
    with torch.no_grad():
        with_adapters = peft_model(input_ids=ids).logits
        merged = lora.merge_lora(peft_model)
        assert not any("lora" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(input_ids=ids).logits, with_adapters, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="rank"):
        lora.peft_lora(_tiny(), rank=0)


def test_new_token_rows_train_with_an_untied_frozen_head():
    model = _tiny()
    assert model.config.tie_word_embeddings
    peft_model = lora.peft_lora(model, rank=2, target_modules=("q_proj",), new_token_ids=[5, 6, 7])
    trainable = count_parameters(peft_model, trainable_only=True)
    assert trainable == 2 * 2 * (32 + 32) + 3 * 32  # two q_proj adapters + three embedding rows
    head = peft_model.get_base_model().get_output_embeddings().weight
    embed = peft_model.get_base_model().get_input_embeddings()
    assert not head.requires_grad and head.data_ptr() != embed.weight.data_ptr()


def test_training_state_memory():
    from labkit.metrics import training_state_megabytes

    # 1M weights, all trainable: (1 + 3) × 4 bytes each; a tenth trainable: (1 + 0.3) × 4
    assert training_state_megabytes(1_000_000, 1_000_000) == pytest.approx(16.0, abs=1e-12)
    assert training_state_megabytes(1_000_000, 100_000) == pytest.approx(5.2, abs=1e-12)
