"""The labs' markdown explains and asks; measured numbers come from runs.

Every decimal and percentage in a lab's markdown cells must be a lecture figure or a worked example,
listed with its reason in ``tests/worked_figures/<lab>.txt`` (one per line: the figure as written,
then ``#`` and why it may stand in the text). A measured figure belongs in a code cell that prints
the learner's run beside the reference (:func:`labkit.reference.show`), never typed into markdown:
the reference moves when a recipe changes, and a learner's CPU, seed or slider gives other numbers.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))
ALLOWED = Path(__file__).resolve().parent / "worked_figures"
# a decimal (0.673, −1.5, 1,439.5) or a percentage (89.2 %, 50%)
FIGURE = re.compile(r"(?<![\w.])[−-]?\d[\d,]*\.\d+(?:\s?%)?|(?<![\w.,])[−-]?\d[\d,]*\s?%")


def _key(text: str) -> str:
    return text.replace(" ", "").replace("\u202f", "").replace("\u00a0", "")


def figures_in_markdown(path: Path) -> list[tuple[int, str]]:
    """(cell index, figure) for every decimal or percentage in the markdown cells of ``path``."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(i, m.group()) for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
            for m in FIGURE.finditer("".join(cell["source"]))]


def allowed(lab: Path) -> dict[str, str]:
    """The lab's worked and lecture figures: figure -> why it may stand in the text."""
    path = ALLOWED / f"{lab.stem}.txt"
    found = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines() if path.exists() else [], 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        figure, sep, why = text.partition("#")
        assert sep and why.strip(), f"{path}:{number}: say why {figure.strip()!r} may stand in the text (after a #)"
        found[_key(figure.strip())] = why.strip()
    return found


def test_the_scan_finds_what_it_must():
    text = "wins 89.2 % (seeds 88.0–90.4 %), loss 0.563, gold −0.63, 50% and 1,439.5; not v2 or 2x2"
    found = [m.group() for m in FIGURE.finditer(text)]
    assert found == ["89.2 %", "88.0", "90.4 %", "0.563", "−0.63", "50%", "1,439.5"]


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_markdown_quotes_only_lecture_and_worked_figures(lab):
    allow = allowed(lab)
    typed = [(cell, figure) for cell, figure in figures_in_markdown(lab) if _key(figure) not in allow]
    assert not typed, (
        f"{lab.name}: measured figures typed into markdown (cell, figure): {typed}. Print them from the run "
        f"beside the reference (labkit.reference.show), or, for a lecture figure or worked example, list it in "
        f"tests/worked_figures/{lab.stem}.txt with the reason")


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_no_stale_entries_in_the_allow_list(lab):
    present = {_key(figure) for _, figure in figures_in_markdown(lab)}
    stale = sorted(set(allowed(lab)) - present)
    assert not stale, f"tests/worked_figures/{lab.stem}.txt lists figures no longer in the lab: {stale}"
