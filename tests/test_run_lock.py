"""The run folder is one run's: two ``esad train`` processes racing into the same new folder cannot
both report success, and a damaged ``model.pt`` is named with how to recover, not a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esad_lib.cli import main
from esad_lib.run_io import RunFileError, RunInUseError, load_run, run_lock

REPO = Path(__file__).resolve().parents[1]
TINY = ["--profile", "smoke", "--category", "pushpins", "--epochs", "1", "--no-progress"]
TINY += ["--set", "base_width=4", "--set", "image_size=16,16", "--set", "cutout_sizes=2,4"]


def test_a_held_run_folder_is_refused_at_once(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(RunInUseError, match="in use: another `esad train`"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released when the run ends
        pass


def test_two_trainings_racing_into_one_new_folder_cannot_both_succeed(tmp_path, trained_smoke_run):
    # trained_smoke_run: the pushpins smoke data exists, so both processes only train
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "esad_lib", "train", *TINY, "--out", str(out)]
    procs = [
        subprocess.Popen([*cmd, "--seed", str(seed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for seed in (0, 1)
    ]
    results = [(p.wait(timeout=600), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]
    codes = [rc for rc, _, _ in results]
    assert sorted(codes) == [0, 2], results
    winner = codes.index(0)
    loser_err = results[1 - winner][2]
    assert "in use" in loser_err or "already holds a training run" in loser_err, loser_err
    assert "run folder" not in results[1 - winner][1]  # the loser does not report a run
    assert json.loads((out / "config.json").read_text())["seed"] == winner  # the winner's run is kept


def test_a_truncated_model_pt_is_named_and_nothing_is_written(smoke_run_dir, tmp_path, capsys):
    run = Path(shutil.copytree(smoke_run_dir, tmp_path / "run"))
    model = run / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(RunFileError, match="model.pt: the file is damaged"):
        load_run(run)
    assert main(["evaluate", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(model) in err and "damaged" in err and "retrain" in err and "Traceback" not in err
    assert not (run / "metrics.json").exists() and not (run / "scores.csv").exists()
