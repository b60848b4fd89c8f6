"""The package layout holds: every module imports on its own (no cycles, whatever comes first), nothing imports a
sibling's private names, and the public ``preprocess`` API is where users find it."""

import ast
import graphlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ("preprocess", "streams", "fusion", "benchmarks")


def our_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_first_in_a_fresh_interpreter():
    # One interpreter; before each module every module of ours is forgotten, so each is the first one imported, as
    # in a user's script: an import cycle that only some import orders hide fails here.
    script = f"""
import importlib, sys
failed = []
for name in {our_modules()!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] in {PACKAGES!r}]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{{name}}: {{type(err).__name__}}: {{err}}")
print("\\n".join(failed))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_no_module_imports_private_names_of_another():
    offenders = []
    for package in (*PACKAGES, "tests"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                    if private:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {', '.join(private)}")
    assert offenders == []


def test_public_preprocess_api_and_lazy_torch():
    script = """
import sys
import preprocess
names = ["load_manifest", "load_flow", "load_pose", "load_frames", "read_frames", "Resize", "Sampling", "probe",
         "DataError", "Manifest", "VideoRecord", "Source"]
missing = [n for n in names if not hasattr(preprocess, n)]
torch_at_import = "torch" in sys.modules
import preprocess.flow.farneback_torch  # the submodule of the same name, imported first, must not shadow it
farneback = preprocess.farneback_torch
print(missing, torch_at_import, callable(farneback))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.stdout.strip() == "[] False True", result.stderr


def test_bin_commands_run_from_the_shell():
    # Line 2 of each bin/ script is a sh/python polyglot that finds .venv: the same line in every Python script, so
    # two of them, a command and a group, run by their path as a user does, stand for all.
    scripts = [
        p for p in sorted((REPO / "bin").iterdir()) if p.read_text().splitlines()[1].startswith(4 * "'" + "true;")
    ]
    assert len({p.read_text().splitlines()[1] for p in scripts}) == 1 and len(scripts) >= 13
    for name in ("train", "preprocess"):
        result = subprocess.run([str(REPO / "bin" / name), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Usage:" in result.stdout, f"bin/{name}: {result.stderr}"


def test_every_python_script_in_bin_is_linted():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    linted = set(config["tool"]["ruff"]["extend-include"])
    python_scripts = {
        f"bin/{path.name}"
        for path in (REPO / "bin").iterdir()
        if path.is_file() and path.read_text().splitlines()[1].startswith(4 * "'" + "true;")  # the sh/python polyglot
    }
    assert python_scripts and python_scripts <= linted, sorted(python_scripts - linted)


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path, known=None) -> set[str]:
    """Every module of ours a file imports, type-only and function-level imports included, as dotted names (with
    ``known``, each mapped to the module of ``known`` it names: ``from .x import y`` is x.y if that is a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if known is not None)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    found = {n for n in found if n.split(".")[0] in PACKAGES}
    if known is None:
        return found

    def closest(dotted):
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted

    return {closest(n) for n in found} - {"", name}


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_circles(level):
    # Every import counts, type-only and inside functions too: a circle closed by either still makes two modules
    # that cannot be read (or changed) one without the other. Packages: preprocess.dataset, streams.models, ...
    paths = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    known = {_module_name(p) for p in paths}

    def node(name):
        return name if level == "module" else ".".join(name.split(".")[:2])

    graph = {}
    for path in paths:
        source = node(_module_name(path))
        targets = {node(t) for t in _imports_of(path, known)}
        # a module importing its own package's __init__ (or a package importing its modules) is not a circle
        graph.setdefault(source, set()).update(
            t for t in targets if t != source and not source.startswith(t + ".") and not t.startswith(source + ".")
        )
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_the_lowest_layers_import_nothing_above_them():
    # batch/ is the bottom of preprocess (records.py, plain data, beside it); the reader sits on both. Not even a
    # type-only import goes up: that was the one circle of the layout (batch and video typed against dataset).
    allowed = {
        "preprocess/batch": ("preprocess.batch", "preprocess.records"),
        "preprocess/records.py": (),
        "preprocess/video/reader.py": ("preprocess.batch", "preprocess.records"),
        "preprocess/video/frames.py": ("preprocess.batch", "preprocess.records", "preprocess.video"),
    }
    offenders = []
    for where, may_import in allowed.items():
        for path in sorted((REPO / where).rglob("*.py")) if (REPO / where).is_dir() else [REPO / where]:
            for name in _imports_of(path):
                if not name.startswith(may_import) or not may_import:
                    offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []
