"""Project hygiene: dependencies in sync, notebooks committed clean, layout as documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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
    from tools.lessons import check_committed

    problems = [p for path in sorted((ROOT / "notebooks").glob("*.ipynb")) for p in check_committed(path)]
    assert not problems, "\n".join(problems)


def test_freshness_check_catches_stale_code_errors_and_size(tmp_path) -> None:
    import nbformat

    from tools import lessons

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lessons_follow_the_rules_a_machine_can_check(path: Path) -> None:
    """Every committed lesson, stripped or executed: no cell over 30 lines, no font under 8 pt
    set in its code, no progress bar and no text output over 60 lines among its outputs, every
    figure at 90 dpi or more (``tools.lessons.check_lesson``)."""
    from tools.lessons import check_lesson

    problems = check_lesson(path)
    assert not problems, "\n".join(problems)


def _png(dpi: float) -> str:
    """A 1x1 PNG figure saved at ``dpi``, base64 (as a notebook stores it)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.1, 0.1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def test_lesson_rules_catch_long_cells_bars_walls_small_fonts_and_low_dpi(tmp_path) -> None:
    import nbformat

    from tools import lessons

    def problems(cells: list) -> list[str]:
        nb = nbformat.v4.new_notebook()
        nb.cells = cells
        p = tmp_path / "01_x.ipynb"
        nbformat.write(nb, p)
        return lessons.check_lesson(p)

    def code(src: str, *outputs) -> nbformat.NotebookNode:
        cell = nbformat.v4.new_code_cell(src)
        cell.outputs = list(outputs)
        return cell

    def stream(text: str) -> nbformat.NotebookNode:
        return nbformat.v4.new_output("stream", name="stderr", text=text)

    def figure(dpi: float) -> nbformat.NotebookNode:
        return nbformat.v4.new_output("display_data", data={"image/png": _png(dpi), "text/plain": "<Figure>"})

    ok = [nbformat.v4.new_markdown_cell("\n".join(["text"] * 30)), code("\n".join(["x = 1"] * 30))]
    ok.append(code("plt.title('t', fontsize=8)", stream("done\n" * 60), figure(100)))
    assert problems(ok) == []
    assert lessons.png_dpi(_png(100)) == pytest.approx(100, abs=0.1)
    assert any("has 31 lines" in m for m in problems([nbformat.v4.new_markdown_cell("\n".join(["t"] * 31))]))
    assert any("has 31 lines" in m for m in problems([code("\n".join(["x = 1"] * 31))]))
    assert any("fontsize=6.5" in m for m in problems([code("ax.text(0, 0, 's', fontsize=6.5)")]))
    assert any("prints 61 lines" in m for m in problems([code("print()", stream("x\n" * 61))]))
    assert any("64 dpi" in m for m in problems([code("plt.show()", figure(64))]))
    frozen = "train:   0%|          | 0/5 [00:00<?, ?it/s]"
    view = {"model_id": "x", "version_major": 2, "version_minor": 0}
    bar = nbformat.v4.new_output("display_data", data={"text/plain": frozen, lessons.WIDGET_VIEW: view})
    assert any("progress bar" in m for m in problems([code("train()", bar)]))
    done = stream("esad check: 100%|##########| 950/950 [00:01<00:00]\n")
    assert any("progress bar" in m for m in problems([code("check()", done)]))
    # execution drops the bars: a bar alone goes, the text printed beside one stays
    mixed = stream("\rsplit:  50%|#####     | 1/2\rsplit: 100%|##########| 2/2\n2 files written\n")
    nb = nbformat.v4.new_notebook()
    dropdown = {"text/plain": "Dropdown(options=('a', 'b'))", lessons.WIDGET_VIEW: view}
    other_widget = nbformat.v4.new_output("display_data", data=dropdown)
    nb.cells = [code("run()", bar, done, mixed, other_widget)]
    assert lessons.drop_progress_bars(nb) == 3
    assert [o.get("text") for o in nb.cells[0].outputs[:1]] == ["2 files written\n"]
    assert nb.cells[0].outputs[1] == other_widget  # a widget that is no progress bar stays


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


#: the README's quote of the committed demo report lies between these two lines
QUOTE_START = "<!-- quoted from docs/demo_report.md"
QUOTE_END = "<!-- end of quote -->"
README_MAX_LINES = 200


def test_readme_is_a_front_door() -> None:
    """Short, no wall of commit hashes, and every file or folder it names exists."""
    readme = (ROOT / "README.md").read_text()
    n = len(readme.splitlines())
    assert n <= README_MAX_LINES, f"README.md: {n} lines, at most {README_MAX_LINES}; move detail to docs/"
    hashes = re.findall(r"`[0-9a-f]{7,40}`", readme)
    assert len(hashes) <= 2, f"README.md names the commits {hashes}; dates and commits belong in docs/"
    named = set(re.findall(r"`((?:esad_lib|docs|benchmarks|notebooks)/[^`\s]*)`", readme))
    named |= set(re.findall(r"\]\(((?:docs|benchmarks)/[^)\s]+)\)", readme))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_readme_quotes_the_committed_demo_report_verbatim() -> None:
    """What ``make demo`` prints is shown from the file the run writes, never retyped: every
    line of the README's quote is a line of ``docs/demo_report.md`` (the report.md of a full
    ``make demo`` run, committed with its provenance line)."""
    report = (ROOT / "docs" / "demo_report.md").read_text()
    assert "Measured " in report and "at commit" in report, "docs/demo_report.md has no provenance line"
    readme = (ROOT / "README.md").read_text()
    assert QUOTE_START in readme and QUOTE_END in readme, "README.md quotes no demo report"
    quote = readme.split(QUOTE_START, 1)[1].split("\n", 1)[1].split(QUOTE_END, 1)[0]
    lines = [ln for ln in quote.splitlines() if ln.strip()]
    stale = [ln for ln in lines if ln not in set(report.splitlines())]
    assert lines and not stale, (
        f"README.md quotes lines that docs/demo_report.md does not hold: {stale}; "
        "copy them again from docs/demo_report.md"
    )
    assert any(ln.startswith("Measured ") for ln in lines), "the quote leaves out the provenance line"


def test_readme_figure_is_committed_and_small() -> None:
    fig = ROOT / "docs" / "esad_overview.png"
    assert fig.is_file() and (ROOT / "docs" / "make_figures.py").is_file()
    assert fig.stat().st_size < 300_000, f"{fig.name}: {fig.stat().st_size / 1e3:.0f} kB, over 300 kB"


def _tracked(*patterns: str) -> list[str] | None:
    """Files git tracks that match ``patterns`` (None outside a git checkout, e.g. an sdist)."""
    try:
        return subprocess.run(
            ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_no_package_archives_are_committed() -> None:
    tracked = _tracked("*.whl", "*.tar.gz", "*.zip")
    assert not tracked, f"committed package files (install them from the registry instead): {tracked}"


def test_no_issue_numbers_in_code() -> None:
    """Code says what it does and why, not which ticket asked for it."""
    tracked = _tracked("*.py", "*.ipynb", "Makefile", "*.toml", "*.yml")
    if tracked is None:
        return
    pattern = re.compile(r"\bissue\s+#?\d+|\(#\d+\)", re.IGNORECASE)
    found = [
        f"{name}:{i}"
        for name in tracked
        if (ROOT / name).is_file()
        for i, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"issue numbers in code: {found[:20]}"


def test_data_folder_commits_only_its_readme() -> None:
    out = _tracked("data")
    if out is None:
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

    from tools import lessons

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
