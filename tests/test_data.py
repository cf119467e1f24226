"""Reading and writing the JSONL files, and the committed story files."""
import pytest

from labkit import data, world


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n')
    with pytest.raises(data.JSONLError, match=r"bad.jsonl, line 3: not valid JSON"):
        data.read_jsonl(path)


def test_a_line_that_is_not_an_object_is_rejected(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(data.JSONLError, match="line 2: expected a JSON object"):
        data.read_jsonl(path)


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="labkit data build"):
        data.read_jsonl(tmp_path / "nope.jsonl")


def test_round_trip_and_datasets_loader(tmp_path):
    rows = [{"text": "hello there", "n": 1}, {"text": "é ünïcode", "n": 2}]
    data.write_jsonl(tmp_path / "x.jsonl", rows)
    assert data.read_jsonl(tmp_path / "x.jsonl") == rows
    ds = data.load_jsonl_dataset(tmp_path / "x.jsonl")
    assert ds.num_rows == 2 and ds[1]["text"] == "é ünïcode"


def test_story_rows_carry_the_generator_statistics():
    rows = data.read_jsonl(data.DATASETS_DIR / "stories" / "validation.jsonl")
    assert len(rows) == data.STORY_FILES["validation"]
    doc = world.document("validation", 5)
    assert rows[5]["text"] == doc.text
    assert rows[5]["n_tokens"] == len(doc.tokens)
    assert rows[5]["nll"] == pytest.approx(doc.nll, abs=1e-6)
    assert {r["kind"] for r in rows} == {"story", "dialogue"}


def test_card_states_the_floor_of_the_file():
    card = (data.DATASETS_DIR / "stories" / "README.md").read_text()
    floor = world.entropy_stats(world.corpus("validation", 1000))["entropy_floor"]
    assert f"entropy floor (mean conditional entropy): {floor:.4f}" in card


def test_problem_files_are_the_stages_problems():
    from labkit.presets import get_preset
    from labkit.world import problems

    cpu = get_preset("cpu")
    sample = data.read_jsonl(data.DATASETS_DIR / "problems" / "train_sample.jsonl")
    assert sample == problems.problems("train", data.PROBLEM_FILES["train_sample"], seed=cpu.world_seed,
                                       worked_share=cpu.sft_math.worked_share)
    test = data.read_jsonl(data.DATASETS_DIR / "problems" / "test.jsonl")
    assert test == problems.problems("test", data.PROBLEM_FILES["test"], seed=cpu.world_seed)
    assert not {r["prompt"][0]["content"] for r in test} & {r["prompt"][0]["content"] for r in sample}


def test_problems_card_quotes_the_measured_numbers_from_the_reference_results():
    from labkit import reference

    card = (data.DATASETS_DIR / "problems" / "README.md").read_text()
    assert card == data._problems_card()
    for name in data.PROBLEMS_FIGURES.values():
        assert f"{reference.figure(name):.1%}" in card, name
    gold = reference.figure(data.SFT_GOLD_REWARD)
    assert f"{gold:.2f}, in the reference run" in (data.DATASETS_DIR / "preferences" / "README.md").read_text()


def test_cards_are_their_templates_filled_in():
    from importlib import resources

    templates = resources.files("labkit") / "cards"
    assert {p.name for p in templates.iterdir()} == {"stories.md", "problems.md", "preferences.md",
                                                     "instructions.md"}
    for name, card in (("instructions", data._instructions_card), ("preferences", data._preferences_card)):
        assert (data.DATASETS_DIR / name / "README.md").read_text(encoding="utf-8") == card()
    with pytest.raises(KeyError, match="counts"):
        data.render_card("instructions")   # a placeholder left unfilled is an error, not a blank
