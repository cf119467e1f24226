"""Colab readiness: every lab's first code cell, and the "Open in Colab" links of the README.

A lab opened alone in Google Colab has no labkit installed. Its first code cell (:data:`CELL`,
identical in every lab) notices Colab, clones the course's repository, installs what labkit needs
(Colab already has PyTorch and Jupyter) and turns on Colab's support for the widgets; anywhere
else the cell does nothing. The cell cannot import labkit to learn where the course lives, so the
repository is written into it: ``python -m labkit notebooks colab OWNER/NAME`` writes yours into
every lab and into the README's links (until then they say ``OWNER/labkit``).
"""
from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = "OWNER/labkit"  # the repository written in a fresh checkout: replace it with yours

INTRO = ("**Running in Google Colab?** The next cell installs labkit there (a minute, the first time) and "
         "turns on Colab's widgets. In JupyterLab or anywhere else it does nothing.")

# The first code cell of every lab. Its `repo = "…"` line is the one `set_repository` rewrites.
CELL = '''# Colab set-up: in Google Colab, install labkit if it is missing and turn on widgets; elsewhere, nothing.
import sys

if "google.colab" in sys.modules:
    import importlib.util, os, subprocess
    repo = "OWNER/labkit"  # the course's GitHub repository (python -m labkit notebooks colab OWNER/NAME)
    here = os.environ.get("LABKIT_COLAB_DIR", "/content/labkit")
    if importlib.util.find_spec("labkit") is None:
        if not os.path.isdir(here):
            subprocess.run(["git", "clone", "-q", "--depth", "1", f"https://github.com/{repo}", here], check=True)
        with open(os.path.join(here, "requirements.txt")) as f:  # Colab has PyTorch and Jupyter already
            needs = [line.split("#")[0].strip() for line in f]
        skip = ("torch", "jupyterlab", "nbval", "pytest", "playwright")
        needs = [n for n in needs if n and not n.startswith(skip)]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *needs], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", here], check=True)
        sys.path.insert(0, here)  # this kernel started before the install: let it find labkit now
    from google.colab import output
    output.enable_custom_widget_manager()'''

MARKER = CELL.splitlines()[0]
_REPO_LINE = re.compile(r'^(    repo = ")([^"]*)(")', re.MULTILINE)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_LINK = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/")


def cell_source(repo: str = PLACEHOLDER) -> str:
    """The Colab cell for ``repo`` (``OWNER/NAME`` on GitHub)."""
    _check(repo)
    return _REPO_LINE.sub(lambda m: m.group(1) + repo + m.group(3), CELL)


def repository(source: str) -> str | None:
    """The repository written in a Colab cell's source, or None if it is not one."""
    match = _REPO_LINE.search(source)
    return match.group(2) if match and source.startswith(MARKER) else None


def link(repo: str, notebook: str, branch: str = "main") -> str:
    """The URL that opens ``labs/<notebook>`` of ``repo`` in Colab."""
    _check(repo)
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/labs/{notebook}"


def set_repository(repo: str, root: Path) -> list[Path]:
    """Write ``repo`` into every lab's Colab cell and the README's Colab links; return the files changed."""
    import nbformat

    _check(repo)
    changed = []
    for path in sorted((root / "labs").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(MARKER)]
        if not cells:
            raise ValueError(f"{path.name} has no Colab cell (a first code cell starting {MARKER!r})")
        for cell in cells:
            cell.source = _REPO_LINE.sub(lambda m: m.group(1) + repo + m.group(3), cell.source)
        nbformat.write(nb, path)
        changed.append(path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = _LINK.sub(lambda m: m.group(0).replace(m.group(1), repo), text)
    if new != text:
        readme.write_text(new, encoding="utf-8")
        changed.append(readme)
    return changed


def readme_repositories(text: str) -> list[str]:
    """The repositories named by the Colab links in a README's text, in order."""
    return _LINK.findall(text)


def _check(repo: str) -> None:
    if not _NAME.match(repo):
        raise ValueError(f"a GitHub repository is written OWNER/NAME (e.g. {PLACEHOLDER}), got {repo!r}")
