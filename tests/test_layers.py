"""labkit's layers (the README's file map): every import points down or sideways, and no import loops.

Bottom to top: foundations (runtime, presets, the pure maths, checkpoints) → the world → data,
models, metrics, evaluation, measurement, figures, the graded exercises → trainers (``labkit.train``) → the stages (one
module each in ``labkit.stages``) → the pipeline → the labs' experiments, widgets and the bench →
the command line. Imports inside functions count too: a lazy import is still a dependency.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labkit"

LAYERS = [
    {"runtime", "presets", "losses", "rewards", "prompts", "tokenizer", "checkpoint", "heads", "lora", "colab", "flops"},
    {"world"},
    {"data", "models", "metrics", "evaluate", "measure", "plots", "reference", "exercises"},
    {"train"},
    {"stages"},
    {"pipeline"},
    {"experiments", "widgets", "bench"},
    {"results", "trial"},
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str] | None = None) -> set[str]:
    """The labkit modules ``path`` imports.

    ``from labkit.world import lexicon`` is the module ``labkit.world.lexicon`` when that exists (in
    ``modules``), else a name from the package ``labkit.world``.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "labkit":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if modules is None or sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "labkit"}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, set(modules)) if m in modules and m != name}
            for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, group in enumerate(LAYERS):
        if top in group:
            return i
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS in tests/test_layers.py")


def test_every_module_has_a_layer():
    for module in _graph():
        if module != "labkit":
            _layer(module)


def test_imports_point_down_or_sideways():
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, deps in _graph().items() if a != "labkit" for b in deps if _layer(b) > _layer(a)]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_loops():
    graph = _graph()
    loops = []

    def visit(node, path, on_path, done):
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt == "labkit":
                continue
            if nxt in on_path:
                loops.append(" → ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt], on_path, done)
        on_path.discard(node)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], set(), done)
    assert not loops, "import loops:\n" + "\n".join(loops)


@pytest.mark.parametrize("source, expected", [
    ("from labkit import world, runtime\nfrom labkit.train.sft import x\n", {"labkit.world", "labkit.runtime",
                                                                           "labkit.train.sft.x"}),
    ("def f():\n    import labkit.pipeline\n", {"labkit.pipeline"}),
])
def test_the_import_reader_sees_module_and_function_level_imports(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(path) == expected


def test_the_readme_file_map_lists_every_module_in_its_layer():
    """Each top-level module and subpackage of labkit has a row in the README's file map, under the layer
    this test puts it in (the map's rows run bottom to top)."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Files"):readme.index("A new stage is one new module")]
    listed = []
    for line in section.splitlines():
        if line.startswith("|") and "`labkit/" in line:
            for path in line.split("|")[2].split(","):
                name = path.strip().strip("`").removeprefix("labkit/").split("/")[0].removesuffix(".py")
                if name and name not in listed:
                    listed.append(name)
    package = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").exists()}
    assert package - set(listed) == set(), "modules missing from the README's file map"
    layers = [_layer(f"labkit.{name}") for name in listed if name in package]
    assert layers == sorted(layers), f"the file map is not in layer order: {list(zip(listed, layers))}"
