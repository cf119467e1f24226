"""Notebook hygiene: committed clean, thin, and carrying the curriculum's worked figures.

Cells marked ``# NBVAL_CHECK_OUTPUT`` (worked figures, exact tables) are committed *with* their
output and execution count, so ``pytest --nbval-lax`` compares what they print with what is stored
(nbval skips a cell without a stored execution count); ``python -m labkit notebooks checked``
stores them. Every other cell is committed without output, so a diff shows only what a person wrote.
"""
import re
from pathlib import Path

import nbformat
import pytest

from labkit.cli import is_checked

LABS = Path(__file__).resolve().parent.parent / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))


def test_the_first_labs_exist():
    names = [p.name for p in NOTEBOOKS]
    assert "00_start_here.ipynb" in names and "01_pretraining.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_carry_output(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata, "saved widget state: clear it before committing"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if is_checked(cell):
            assert cell.outputs and cell.execution_count is not None, \
                f"cell {i} is checked by nbval but has no stored output: run `python -m labkit notebooks checked`"
            for output in cell.outputs:
                assert output.output_type in ("stream", "execute_result"), f"cell {i}: {output.output_type} output"
                assert not output.get("name") == "stderr", f"cell {i} stores stderr"
                assert not set(output.get("data", {})) - {"text/plain", "text/html"}, \
                    f"cell {i} stores a non-text output (an image or a widget): nbval should compare text only"
        else:
            assert cell.outputs == [], f"cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"


def test_the_marker_reader_needs_the_whole_line():
    cell = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)")
    assert is_checked(cell)
    assert not is_checked(nbformat.v4.new_code_cell("x = 1  # not # NBVAL_CHECK_OUTPUT"))
    assert not is_checked(nbformat.v4.new_markdown_cell("# NBVAL_CHECK_OUTPUT"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_is_introduced_by_prose(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert i > 0 and nb.cells[i - 1].cell_type == "markdown", \
                f"cell {i} follows another code cell: say in a sentence why it runs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_sizes_come_from_the_preset(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    hard_coded = re.findall(r"\b(steps|d_model|n_train_docs|n_val_docs|docs|n_examples)\s*=\s*\d", code)
    assert not hard_coded, f"sizes must come from labkit.presets, found {hard_coded}"


def test_lab01_carries_the_worked_figures():
    path = LABS / "01_pretraining.ipynb"
    source = path.read_text(encoding="utf-8")
    for text in ["May the force be", "0.51", "0.21", "0.13", "98.9", "98.4", "346"]:
        assert text in source, f"lab 01 should mention {text!r}"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    for call in ["losses.nll(0.21)", "losses.nats_to_bits(1.9)", "storage_arithmetic(tokens=500e9"]:
        assert call in code, f"lab 01 should compute {call}"


def test_lab00_builds_the_few_shot_prompt_and_mask():
    code = "\n".join(c.source for c in nbformat.read(LABS / "00_start_here.ipynb", as_version=4).cells
                     if c.cell_type == "code")
    for call in ["few_shot_sentiment_messages", "parse_sentiment", "apply_chat_template"]:
        assert call in code


def _text_and_code(name: str) -> tuple[str, str]:
    cells = nbformat.read(LABS / name, as_version=4).cells
    return ("\n".join(c.source for c in cells if c.cell_type == "markdown"),
            "\n".join(c.source for c in cells if c.cell_type == "code"))


def test_lab02_cites_the_figures_and_runs_every_demo():
    text, code = _text_and_code("02_instruction_tuning.ipynb")
    for figure in ["27,540", "1,000", "63.3", "78.8", "Generation, Open QA, Brainstorm, Chat"]:
        assert figure in text, f"lab 02 should mention {figure!r}"
    for call in ["loss_mask_table", 'pipeline.ensure_with_curve("sft"', "demo_run(then", "imbalance_panel", "noise_panel",
                 "ambiguity_experiment", "shifted_arithmetic", "accuracy_bars"]:
        assert call in code, f"lab 02 should run {call}"


def test_lab03_computes_the_lecture_matrices_and_cites_no_free_lunch():
    text, code = _text_and_code("03_lora.ipynb")
    for figure in ["−0.085, 0.138, −0.153, −0.112", "4×8", "0.27", "5 min 27 s", "0.81", "5 min 41 s", "4096"]:
        assert figure in text, f"lab 03 should mention {figure!r}"
    for call in ["lora.lecture_example()", "lora_parameter_counts(4096, 4096, 8)", "lora_params_explorer",
                 "lora_panel", "merge_lora"]:
        assert call in code, f"lab 03 should run {call}"
    assert "# NBVAL_CHECK_OUTPUT" in code


def test_lab04_expands_a_ranking_and_shows_the_ceiling():
    text, code = _text_and_code("04_reward_modelling.ipynb")
    for figure in ["C(K, 2)", "4 answers give 6", "σ(r(x, y_w) − r(x, y_l))"]:
        assert figure in text, f"lab 04 should mention {figure!r}"
    for call in ["ranking_to_pairs", "bradley_terry_explorer", 'pipeline.ensure_with_curve("reward"', "bayes_ceiling",
                 "calibration_figure", "reward_experiment", "length_bias", "from_hh_rlhf", "evaluate.best_of_n(",
                 '"reward_naive"', "best_of_n_figure"]:
        assert call in code, f"lab 04 should run {call}"


def test_lab05_works_the_clip_and_runs_every_part():
    text, code = _text_and_code("05_ppo.ipynb")
    for figure in ["ε = 0.2, A = 2", "r = 1.5", "2.4", "4/3", "1.34", "1.6", "lower clip never binds",
                   "E[r] − β·KL(π ‖ π_SFT)", "196 GB", "29 GB", "16 bytes", "252 GB", "InstructGPT"]:
        assert figure in text, f"lab 05 should mention {figure!r}"
    for call in ["ppo_clip_table(0.2, advantage=2.0)", "ppo_clip_table(0.2, advantage=-2.0)", "ppo_clip_explorer",
                 "kl_penalty_rewards", "gae_advantages", 'pipeline.ensure_with_curve("ppo"', "ppo_panel", 'reward_stage="reward_naive"',
                 "reward_vs_kl_figure", "evaluate.best_of_n(", "bench.ppo_memory", "ppo_memory_plan(7e9, 40e6)"]:
        assert call in code, f"lab 05 should run {call}"


def test_lab06_derives_dpo_and_runs_every_part():
    text, code = _text_and_code("06_dpo.ipynb")
    for figure in ["π_SFT(y | x) · exp(r(x, y) / β) / Z(x)", "Z = 0.4·e¹ + 0.3·e⁰ + 0.2·e⁻² + 0.1·e² = 2.153",
                   "r(x, y) = β · log( π*(y|x) / π_SFT(y|x) ) + β · log Z(x)", "0.426", "0.310", "0.619",
                   "β · σ(r̂_l − r̂_w) · ( ∇ log π_θ(y_w) − ∇ log π_θ(y_l) )", "off by the factor 1/β",
                   "no sampling, no critic"]:
        assert figure in text, f"lab 06 should mention {figure!r}"
    for call in ["dpo_tilt_table(1.0)", "dpo_tilt_explorer", "dpo_bt_check(1.0)", "dpo_gradient_table(0.5)",
                 "dpo_slide_gradient_figure", "dpo_weight_figure", 'pipeline.ensure_with_curve("dpo"', "trl_batch_loss",
                 "losses.dpo_loss", 'pipeline.metrics("reward")', "dpo_panel", "onpolicy_pairs", "label_agreement",
                 "dpo_experiment("]:
        assert call in code, f"lab 06 should run {call}"


def test_lab07_shows_the_signal_and_runs_every_part():
    text, code = _text_and_code("07_grpo.ipynb")
    for figure in ["A_i = (r_i − mean(r)) / (std(r) + 1e-4)", "+2.474", "−0.353", "teaches nothing",
                   "imperfect demonstrators", "no reward model", "no critic"]:
        assert figure in text, f"lab 07 should mention {figure!r}"
    for call in ["rewards.extract_final_answer", "rewards.correctness_reward", "rewards.format_reward",
                 "rewards.length_reward", "grpo_group_table(8, right)", "grpo_group_explorer", "signal_check",
                 'pipeline.metrics("grpo"', "grpo_curves", "evaluate_problems", "grpo_panel", "length_hacking",
                 "length_hacking_figure", "bench.bench_grpo"]:
        assert call in code, f"lab 07 should run {call}"


def test_lab08_races_every_method_and_measures_the_open_problems():
    text, code = _text_and_code("08_showdown.ipynb")
    for figure in ["log n − (n − 1)/n", "same SFT policy", "workshop", "four phrasings", "σ((r_a − r_b)/T)"]:
        assert figure in text, f"lab 08 should mention {figure!r}"
    for call in ["sd.grpo_steps(cpu)", "evaluate.best_of_n_kl(n)", "sd.showdown(preset)", "plots.showdown_figure",
                 "race.grpo_verifiable", "plots.aspects_figure", "sd.aspects_by_place", "plots.tradeoff_figure",
                 "sd.instability", "sd.judge_difficulty"]:
        assert call in code, f"lab 08 should run {call}"


def _run_shipped(source: str, namespace: dict):
    """Run an exercise cell as shipped (its last line is the check) in ``namespace``; return the verdict."""
    *body, last = source.strip().splitlines()
    exec("\n".join(body), namespace)
    return eval(last, namespace)


def _lab03_04_shipped_verdicts(name: str) -> list:
    """Run each "Your turn" cell of a lab as shipped (its last line is the check) and return the verdicts."""
    import random

    from labkit import exercises
    from labkit.world import preferences

    cells = nbformat.read(LABS / name, as_version=4).cells
    verdicts = []
    for before, cell in zip(cells, cells[1:]):
        if before.cell_type == "markdown" and before.source.startswith("## Your turn:") and cell.cell_type == "code":
            namespace = {"exercises": exercises, "prefs": preferences, "random": random, "print": lambda *a, **k: None}
            verdicts.append(_run_shipped(cell.source, namespace))
    return verdicts


def test_lab03_exercise_ships_unattempted_and_the_lecture_letters_are_mapped():
    text, code = _text_and_code("03_lora.ipynb")
    assert [v.status for v in _lab03_04_shipped_verdicts("03_lora.ipynb")] == ["not attempted yet"]
    assert "exercises.check_lora_count(lora_count)" in code
    # the slide's B is the weight and C its output: here B is an update, so C is the output's change
    assert "C = A × B is the **change**" in text
    # peft's factors are the lecture's L and R only up to transpose; lora_B (R) is the one that starts at zero
    assert "its transpose is the lecture's L" in text and "its transpose is the lecture's R" in text
    assert "L = `lora_A`ᵀ" in text and "R = `lora_B`ᵀ" in text and "the same two matrices" not in text
    assert ".self_attn.q_proj\")" in code and '("lora_B", "R"' in code  # peft's own factors, on the lab's model
    checked = [c for c in nbformat.read(LABS / "03_lora.ipynb", as_version=4).cells if is_checked(c)]
    assert len(checked) >= 3


def test_lab04_exercises_ship_unattempted_and_trls_loss_is_computed_beside_ours():
    text, code = _text_and_code("04_reward_modelling.ipynb")
    assert [v.status for v in _lab03_04_shipped_verdicts("04_reward_modelling.ipynb")] == ["not attempted yet"] * 2
    assert "every **unordered** pair" in text and "ordered pairs" not in text
    for call in ["rm.trl_batch_loss(reward_model, tok, test_pairs", "losses.bradley_terry_loss(chosen, rejected)",
                 "check_ranking_pairs(ranking_pairs)", "check_bradley_terry_loss("]:
        assert call in code, f"lab 04 should run {call}"
    assert "center_rewards_coefficient" in text and "margin" in text
    checked = [c for c in nbformat.read(LABS / "04_reward_modelling.ipynb", as_version=4).cells if is_checked(c)]
    assert len(checked) >= 3


def test_lab00_ships_its_exercise_unanswered_and_asks_the_framework_question():
    from labkit.exercises import lab00

    text, code = _text_and_code("00_start_here.ipynb")
    assert "## Your turn: a one-shot prompt" in text
    assert "return ...  # your code here" in code and "exercises.check_few_shot_prompt(one_shot_prompt)" in code
    assert f'example_review = "{lab00.EXAMPLE_REVIEW}"' in code and f'one_shot_prompt("{lab00.QUERY}")' in text
    assert "self-supervised" in text and "reinforcement learning" in text and "at heart" not in text
    cells = {c.get("id"): c.source for c in nbformat.read(LABS / "00_start_here.ipynb", as_version=4).cells}
    assert _run_shipped(cells["exercise"], {}).status == "not attempted yet"


def test_lab01_ships_its_exercise_unanswered_and_gives_both_units():
    text, code = _text_and_code("01_pretraining.ipynb")
    flat = " ".join(text.split())
    assert "## Your turn: a text's loss, in nats and bits" in text
    assert "return ...  # your code here" in code and "return loss_nats, loss_bits" in text
    assert "exercises.check_text_loss(text_loss)" in code
    for words in ["326 GiB", "346 GB matches neither unit", "500 billion tokens", "most of the Digimon"]:
        assert words in flat, f"lab 01 should say {words!r}"
    assert "500 billion training tokens" not in flat
    cells = {c.get("id"): c.source for c in nbformat.read(LABS / "01_pretraining.ipynb", as_version=4).cells}
    namespace = {"print": lambda *a, **k: None}
    exec(cells["exercise-data"], namespace)
    assert _run_shipped(cells["exercise"], namespace).status == "not attempted yet"


def test_lab02_ships_its_exercise_unanswered_and_states_the_transfer_direction():
    from labkit import exercises, world
    from labkit.exercises import lab02
    from labkit.prompts import show_mask
    from labkit.tokenizer import train_tokenizer

    text, code = _text_and_code("02_instruction_tuning.ipynb")
    flat = " ".join(text.split())
    assert "## Your turn: the labels SFT trains on" in text
    assert "return ...  # your code here" in code and "exercises.check_sft_labels(sft_labels)" in code
    assert "fine-tuned for reading comprehension on English questions only" in flat
    assert "answered Chinese questions with EM 63.3 and F1 78.8" in flat
    assert "# NBVAL_CHECK_OUTPUT" in code
    cells = {c.get("id"): c.source for c in nbformat.read(LABS / "02_instruction_tuning.ipynb", as_version=4).cells}
    tok = train_tokenizer([], extra_words=world.vocabulary())  # the lab's tokenizer knows every word of the world
    namespace = {"base_tok": tok, "show_mask": show_mask, "print": lambda *a, **k: None}
    exec(cells["exercise-data"], namespace)
    assert tok.unk_token not in namespace["tokens"] and namespace["tokens"].count("<|assistant|>") == 2
    assert _run_shipped(cells["exercise"], namespace).status == "not attempted yet"
    assert namespace["chat"] == lab02.CHAT  # the chat the lab shows is the first the check tries
    assert exercises.check_sft_labels(lab02.solution_sft_labels).right
