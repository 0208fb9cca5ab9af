"""Project hygiene: dependencies in sync, notebooks committed clean, layout as documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}
NOT_DEPENDENCIES = {"python", "pip"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_deps() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return {_name(r) for r in reqs}


def _environment_deps() -> set[str]:
    names: set[str] = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:") :].splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if not m or line.strip().startswith("- -e"):
            continue
        name = CONDA_TO_PYPI.get(m.group(1).lower(), m.group(1).lower())
        if name not in NOT_DEPENDENCIES and not name.startswith("-"):
            names.add(name.replace("_", "-"))
    return names


def test_environment_yml_and_pyproject_list_the_same_dependencies() -> None:
    py, env = _pyproject_deps(), _environment_deps()
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_environment_installs_the_project_itself() -> None:
    assert re.search(r"^\s*-\s+-e \.\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_notebooks_are_committed_without_outputs() -> None:
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name}: a code cell has outputs (strip them)"
                assert cell.get("execution_count") is None, f"{path.name}: execution_count set"


def test_each_notebook_starts_with_a_tagged_parameters_cell() -> None:
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        tags = first.get("metadata", {}).get("tags", [])
        assert "parameters" in tags, f"{path.name}: first code cell is not tagged 'parameters'"
        assert "PROFILE" in "".join(first["source"]), f"{path.name}: parameters cell sets no PROFILE"


def test_notebooks_are_numbered_and_import_only_the_library() -> None:
    for path in NOTEBOOKS:
        assert re.match(r"^\d\d_[a-z0-9_]+\.ipynb$", path.name), path.name
        src = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        assert "%run" not in src and "import_notebook" not in src, f"{path.name} imports another notebook"


def test_readme_shows_the_two_commands_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_data_folder_commits_only_its_readme() -> None:
    try:
        out = subprocess.run(
            ["git", "ls-files", "data"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return  # not a git checkout (e.g. an sdist): nothing to check
    assert set(out) <= {"data/README.md"}, out


def test_command_line_entry_points() -> None:
    for cmd in ([sys.executable, "-m", "esad_lib", "--help"],):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "usage: esad" in res.stdout
