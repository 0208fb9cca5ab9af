"""``esad train`` command line: --set type conversion, config assembly, a real short run."""

from __future__ import annotations

import argparse
import json

import pytest

from esad_lib.cli import train as train_cli
from esad_lib.config import PRESETS
from esad_lib.overrides import parse_overrides


def test_set_overrides_are_converted_with_the_field_types():
    got = parse_overrides(
        [
            "lr=2e-4",
            "epochs=7",
            "cutout_sizes=2,4,8",
            "image_size=48,64",
            "amp=false",
            "use_eca=Yes",
            "max_test_images=none",
            "feature_weights=/w/resnet18.pth",
            "category=pushpins",
        ]
    )
    assert got == {
        "lr": 2e-4,
        "epochs": 7,
        "cutout_sizes": (2, 4, 8),
        "image_size": (48, 64),
        "amp": False,
        "use_eca": True,
        "max_test_images": None,
        "feature_weights": "/w/resnet18.pth",
        "category": "pushpins",
    }
    assert parse_overrides(["max_test_images=5"]) == {"max_test_images": 5}


@pytest.mark.parametrize(
    "item, message",
    [
        ("learning_rate=1", "unknown config field 'learning_rate'"),
        ("epoch=3", "did you mean epochs"),
        ("epochs=three", "expected an integer"),
        ("amp=maybe", "expected true/false"),
        ("image_size=1,2,3", "expected 2 comma-separated values"),
        ("lr", "key=value"),
    ],
)
def test_bad_set_overrides_name_the_problem(item, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides([item])


def test_explicit_profile_beats_env_and_flags_apply(monkeypatch):
    monkeypatch.setenv("ESAD_PROFILE", "smoke")
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--profile",
            "demo",
            "--out",
            "x",
            "--epochs",
            "3",
            "--seed",
            "5",
            "--category",
            "screw_bag",
            "--set",
            "lr=0.01",
        ]
    )
    cfg = train_cli.build_config(args)
    assert cfg == PRESETS["demo"].replace(epochs=3, seed=5, category="screw_bag", lr=0.01)
    args = parser.parse_args(["--out", "x"])
    assert train_cli.build_config(args).profile == "smoke"


def test_register_adds_train_subcommand():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train_cli.register(sub)
    args = parser.parse_args(["train", "--out", "r", "--resume", "--set", "epochs=1"])
    assert args.func is train_cli.run and args.resume and args.set == ["epochs=1"]


def test_cli_trains_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "--data",
        "synthetic",
        "--profile",
        "smoke",
        "--category",
        "juice_bottle",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "base_width=4",
        "--set",
        "image_size=16,16",
        "--set",
        "cutout_sizes=2,4",
    ]
    argv = [*base, "--epochs", "1"]
    assert train_cli.main(argv) == 0
    assert "best epoch 1" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["base_width"] == 4 and cfg["cutout_sizes"] == [2, 4] and cfg["category"] == "juice_bottle"
    assert (out / "model.pt").exists()
    # same command again: a clear error, nothing overwritten
    mtime = (out / "model.pt").stat().st_mtime_ns
    assert train_cli.main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "model.pt").stat().st_mtime_ns == mtime
    # --resume with --epochs 2 continues the run by one epoch
    assert train_cli.main([*base, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["epochs_run"] == 2
