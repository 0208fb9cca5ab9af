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


def test_committed_notebooks_are_fresh() -> None:
    """Each committed notebook is either stripped or executed in the demo profile with code
    cells unchanged since (its stamp), no error output, no widget state, within the size budget."""
    from esad_lib.lessons import check_committed

    problems = [p for path in sorted((ROOT / "notebooks").glob("*.ipynb")) for p in check_committed(path)]
    assert not problems, "\n".join(problems)


def test_freshness_check_catches_stale_code_errors_and_size(tmp_path) -> None:
    import nbformat

    from esad_lib import lessons

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("print(x)")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.metadata[lessons.STAMP_KEY] = {"profile": "demo", "code_sha256": lessons.code_sha256(nb)}
    p = tmp_path / "01_x.ipynb"
    nbformat.write(nb, p)
    assert lessons.check_committed(p) == []
    nb.cells[0].source = "x = 2"  # edited after execution
    nbformat.write(nb, p)
    assert any("changed since" in m for m in lessons.check_committed(p))
    nb.metadata[lessons.STAMP_KEY]["code_sha256"] = lessons.code_sha256(nb)
    nb.cells[1].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    nbformat.write(nb, p)
    assert any("holds an error" in m for m in lessons.check_committed(p))
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 2_100_000)]
    nbformat.write(nb, p)
    assert any("budget" in m for m in lessons.check_committed(p))
    nb.metadata[lessons.STAMP_KEY]["profile"] = "smoke"
    nbformat.write(nb, p)
    assert any("not 'demo'" in m for m in lessons.check_committed(p))
    # a progress bar saved as a widget view: flagged, and strip_widget_views keeps its text
    nb.metadata[lessons.STAMP_KEY]["profile"] = "demo"
    view = {"model_id": "x", "version_major": 2, "version_minor": 0}
    bar = {lessons.WIDGET_VIEW: view, "text/plain": "50%"}
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data=bar)]
    nbformat.write(nb, p)
    assert any("widget views" in m for m in lessons.check_committed(p))
    assert lessons.strip_widget_views(nb) == 1 and nb.cells[1].outputs[0]["data"] == {"text/plain": "50%"}
    nbformat.write(nb, p)
    assert lessons.check_committed(p) == []


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


def test_header_states_the_measured_time(tmp_path) -> None:
    """Execution writes the stamp's time into the header's ``**Time:**`` line; a header that does
    not state it (edited, or an older execution) is flagged."""
    import nbformat

    from esad_lib import lessons

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 01 x\n\n**Source:** the paper. **Time:** see README.\n\nText."),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    stamp = {"profile": "demo", "code_sha256": lessons.code_sha256(nb), "seconds": 342.0}
    stamp.update(date="2026-12-01", cpu_cores=2, torch_threads=2)
    nb.metadata[lessons.STAMP_KEY] = stamp
    p = tmp_path / "01_x.ipynb"
    nbformat.write(nb, p)
    assert any("measured time" in m for m in lessons.check_committed(p))
    assert lessons.set_header_time(nb, stamp)
    head = nb.cells[0].source
    assert "**Time:** 5.7 min in the demo profile" in head and "2-core CPU, 2 torch threads" in head
    assert head.startswith("# 01 x\n\n**Source:** the paper. **Time:**") and head.endswith("\n\nText.")
    nbformat.write(nb, p)
    assert lessons.check_committed(p) == []
    assert "40 s in the demo" in lessons.header_time_text({**stamp, "seconds": 40.2})
    assert not lessons.set_header_time(nbformat.v4.new_notebook(), stamp)
    table = lessons.times_table([p])
    assert "| `01_x.ipynb` | 342 s (5.7 min) | 2026-12-01 | 2 |" in table
