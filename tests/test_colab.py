"""Every lab opens alone in Colab: its first code cell installs labkit there and does nothing elsewhere."""
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from labkit import cli, colab

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def first_code_cell(path: Path):
    nb = nbformat.read(path, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    return nb.cells[i - 1], nb.cells[i]


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name)
def test_each_lab_starts_with_the_colab_cell_and_says_so(path):
    intro, cell = first_code_cell(path)
    assert intro.cell_type == "markdown" and "Colab" in intro.source and "does nothing" in intro.source
    assert colab.repository(cell.source) is not None, "the first code cell is the Colab set-up"
    assert cell.source == colab.cell_source(colab.repository(cell.source)), "every lab has the same Colab cell"


def test_the_labs_and_the_readme_name_one_repository():
    repos = {colab.repository(first_code_cell(p)[1].source) for p in LABS}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = colab.readme_repositories(readme)
    assert len(repos) == 1 and set(linked) == repos
    for path in LABS:  # an "Open in Colab" line per lab
        assert colab.link(linked[0], path.name) in readme


def run_cell(monkeypatch, *, colab_present: bool, labkit_installed: bool, here: Path):
    """Execute the Colab cell as a kernel would; record the commands it runs instead of running them."""
    calls, enabled = [], []
    if colab_present:
        output = types.SimpleNamespace(enable_custom_widget_manager=lambda: enabled.append(True))
        google = types.ModuleType("google")
        google_colab = types.ModuleType("google.colab")
        google_colab.output = output
        google.colab = google_colab
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def fake_run(cmd, check):
        calls.append(cmd)
        if cmd[:2] == ["git", "clone"]:  # the clone brings the repository's requirements.txt
            Path(cmd[-1]).mkdir(parents=True)
            shutil.copy(ROOT / "requirements.txt", Path(cmd[-1]) / "requirements.txt")

    monkeypatch.setattr(subprocess, "run", fake_run)
    real_find_spec = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if labkit_installed or name != "labkit" else None))
    monkeypatch.setenv("LABKIT_COLAB_DIR", str(here))
    path_before = list(sys.path)
    exec(colab.cell_source("someone/course"), {})
    added = [p for p in sys.path if p not in path_before]
    sys.path[:] = path_before
    return calls, enabled, added


def test_outside_colab_the_cell_does_nothing(monkeypatch, tmp_path):
    calls, enabled, added = run_cell(monkeypatch, colab_present=False, labkit_installed=False, here=tmp_path / "x")
    assert calls == [] and enabled == [] and added == []
    assert not (tmp_path / "x").exists()


def test_in_colab_with_labkit_installed_it_only_turns_on_widgets(monkeypatch, tmp_path):
    calls, enabled, added = run_cell(monkeypatch, colab_present=True, labkit_installed=True, here=tmp_path / "x")
    assert calls == [] and enabled == [True] and added == []


def test_in_colab_without_labkit_it_clones_installs_and_finds_it(monkeypatch, tmp_path):
    here = tmp_path / "labkit"
    calls, enabled, added = run_cell(monkeypatch, colab_present=True, labkit_installed=False, here=here)
    clone, needs, editable = calls
    assert clone == ["git", "clone", "-q", "--depth", "1", "https://github.com/someone/course", str(here)]
    assert needs[:4] == [sys.executable, "-m", "pip", "install"]
    names = [n.split(">")[0].split("<")[0].split("=")[0] for n in needs[5:]]
    assert "trl" in names and "peft" in names and "transformers" in names and "plotly" in names
    for colab_has_it in ("torch", "jupyterlab", "nbval", "pytest", "playwright"):
        assert colab_has_it not in names  # Colab brings PyTorch and Jupyter; tests are not needed there
    assert editable == [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(here)]
    assert added == [str(here)] and enabled == [True]


def test_a_second_run_in_colab_reuses_the_clone(monkeypatch, tmp_path):
    here = tmp_path / "labkit"
    here.mkdir()
    shutil.copy(ROOT / "requirements.txt", here / "requirements.txt")
    calls, _, _ = run_cell(monkeypatch, colab_present=True, labkit_installed=False, here=here)
    assert [c[:2] for c in calls] == [[sys.executable, "-m"], [sys.executable, "-m"]]


def test_setting_the_repository_rewrites_every_cell_and_link(tmp_path):
    (tmp_path / "labs").mkdir()
    for path in LABS[:2]:
        shutil.copy(path, tmp_path / "labs" / path.name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    before = nbformat.read(tmp_path / "labs" / LABS[0].name, as_version=4)
    changed = colab.set_repository("course-org/llm-labs", tmp_path)
    assert len(changed) == 3
    for path in LABS[:2]:
        assert colab.repository(first_code_cell(tmp_path / "labs" / path.name)[1].source) == "course-org/llm-labs"
    after = nbformat.read(tmp_path / "labs" / LABS[0].name, as_version=4)
    assert [i for i, (a, b) in enumerate(zip(after.cells, before.cells)) if a.source != b.source] == [2]
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert set(colab.readme_repositories(readme)) == {"course-org/llm-labs"}
    assert "OWNER/labkit/blob" not in readme


def test_a_malformed_repository_is_refused_with_the_expected_form():
    with pytest.raises(ValueError, match="OWNER/NAME"):
        colab.cell_source("https://github.com/a/b")
    assert cli.main(["notebooks", "colab"]) == 2
