"""The typed config and its presets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from esad_lib.config import PRESETS, PROFILES, ESADConfig, get_config, profile_name


def test_presets_exist_and_scale_up() -> None:
    assert set(PRESETS) == set(PROFILES)
    s, d, p = (PRESETS[n] for n in ("smoke", "demo", "paper"))
    assert s.image_size[0] < d.image_size[0] < p.image_size[0]
    assert s.base_width < d.base_width < p.base_width == 64
    assert s.epochs < d.epochs < p.epochs
    # the paper's setting
    assert p.image_size == (256, 256) and p.cutout_sizes == (2, 4, 8, 16)
    assert p.num_masks == 3 and p.fill_alpha == 0.5 and p.lr == 1e-4


def test_environment_variable_overrides_the_notebook_choice(monkeypatch) -> None:
    monkeypatch.setenv("ESAD_PROFILE", "smoke")
    assert get_config("paper").profile == "smoke"
    monkeypatch.delenv("ESAD_PROFILE")
    assert get_config("paper").profile == "paper"
    assert profile_name(None) == "demo"
    monkeypatch.setenv("ESAD_PROFILE", "huge")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_config()


def test_replace_is_a_config_diff() -> None:
    base = PRESETS["demo"]
    v = base.replace(fill_alpha=0.0, method="riad")
    assert v.diff(base) == {"fill_alpha": 0.0, "method": "riad"}
    assert base.fill_alpha == 0.5  # the preset is untouched
    with pytest.raises(KeyError, match="fill_alfa"):
        base.replace(fill_alfa=1.0)


def test_round_trip_through_json_and_stable_key() -> None:
    cfg = PRESETS["smoke"].replace(seed=3)
    back = ESADConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.key() == cfg.key()
    assert cfg.key() != PRESETS["smoke"].key()
    # fields that do not change results do not change the key
    assert cfg.replace(device="cpu").key() == cfg.replace(device="cuda").key()


def test_widths_follow_the_reference_code() -> None:
    from esad_lib.method import unet_widths

    assert unet_widths(PRESETS["paper"].base_width) == (64, 128, 256, 512, 512)


def test_every_config_field_says_where_its_default_comes_from() -> None:
    """Each field of ESADConfig carries [paper], [paper ref. code], [RIAD] or [ours] in the comment
    block above it or on its own line (config.py's promise)."""
    import ast
    import inspect
    import re
    import textwrap

    from esad_lib import config

    src = textwrap.dedent(inspect.getsource(config.ESADConfig))
    lines = src.splitlines()
    tag = re.compile(r"\[(paper|paper ref\. code|RIAD|ours)\]")
    cls = ast.parse(src).body[0]
    fields = [n for n in cls.body if isinstance(n, ast.AnnAssign)]
    assert {f.target.id for f in fields} == {f.name for f in dataclasses.fields(config.ESADConfig)}
    untagged = []
    for f in fields:
        text = [lines[f.lineno - 1]]
        i = f.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):  # the comment block just above
            text.append(lines[i])
            i -= 1
        if not tag.search(" ".join(text)):
            untagged.append(f.target.id)
    assert not untagged, f"config fields without a [paper]/[RIAD]/[ours] tag: {untagged}"


def test_riad_baseline_is_one_config_diff() -> None:
    from esad_lib.config import RIAD_DIFF, riad_config

    cfg = riad_config(get_config("smoke"))
    assert cfg.diff(get_config("smoke")) == RIAD_DIFF
    assert cfg.method == "riad" and cfg.score_map == "pixel" and cfg.w_feature == 0.0


def test_paper_profile_smooths_like_riad() -> None:
    cfg = PRESETS["paper"]
    assert (cfg.smoothing, cfg.smoothing_size) == ("mean", 21)


def test_cache_keys_of_the_presets_are_pinned() -> None:
    """``key()`` names the cached trained model of every run (``data/cache/runs/<key>``): a change
    to the fields, their defaults or the hashing retrains every model and must be deliberate."""
    from esad_lib.config import riad_config

    # changed deliberately on 2026-12-06: 120 synthetic test images per type (synth_counts)
    assert PRESETS["demo"].key() == "f840eb621217"
    assert riad_config(PRESETS["demo"]).key() == "e186b11f2aa7"
    assert PRESETS["smoke"].key() == "12e2018615a4"
    assert PRESETS["paper"].key() == "f7e6a1ef1bd1"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"test_fill": "zeros"}, "test_fill='zeros' is not one of: 'train', 'test', 'zero', 'input'"),
        ({"method": "gan"}, "unknown method: method='gan' is not one of: 'esad', 'riad'"),
        ({"score_map": "pixels"}, "score_map='pixels' is not one of: 'feature', 'pixel'"),
        ({"profile": "huge"}, "profile='huge' is not one of: 'smoke', 'demo', 'paper'"),
        ({"epochs": -1}, r"epochs=-1 must be >= 1"),
        ({"epochs": 2.0}, "epochs=2.0 must be an integer"),
        ({"image_size": (0, 64)}, r"image_size=\(0, 64\) each value must be >= 1"),
        ({"image_size": (64,)}, "image_size=.* must hold 2 values"),
        ({"cutout_sizes": ()}, "cutout_sizes=.* must hold at least one value"),
        ({"synth_counts": (1, 2, 3, 4, -1)}, "synth_counts=.* each value must be >= 0"),
        ({"fill_alpha": 1.5}, r"fill_alpha=1.5 must be in \[0.0, 1.0\]"),
        ({"lr": 0.0}, "lr=0.0 must be > 0"),
        ({"lr": float("nan")}, "lr=nan must be a finite number"),
        ({"amp": 1}, "amp=1 must be True or False"),
        ({"max_test_images": 0}, "max_test_images=0 must be >= 1"),
        ({"block_kernel": 4}, "block_kernel=4 must be odd"),
        ({"device": "gpu"}, "device='gpu' is not 'auto' or a torch device"),
        ({"category": ""}, "category='' must be a non-empty str"),
    ],
)
def test_a_bad_value_is_refused_when_the_config_is_built(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        ESADConfig(**change)
    with pytest.raises(ValueError, match=message):  # replace builds a new config: checked too
        PRESETS["smoke"].replace(**change)


def test_all_problems_are_listed_and_lists_become_tuples() -> None:
    with pytest.raises(ValueError, match=r"epochs=0 must be >= 1; unknown smoothing: "):
        ESADConfig(smoothing="median", epochs=0)
    cfg = ESADConfig(image_size=[64, 48], cutout_sizes=[2, 4])  # as read back from JSON
    assert cfg.image_size == (64, 48) and cfg.cutout_sizes == (2, 4)
    assert cfg.key() == ESADConfig(image_size=(64, 48), cutout_sizes=(2, 4)).key()
    assert ESADConfig(max_test_images=None, feature_weights=None).max_test_images is None


def test_every_allowed_value_has_its_implementation() -> None:
    """The allowed values live in ``config.CHOICES``; each is implemented where it is used."""
    import torch
    from torch import nn

    from esad_lib import features, scoring
    from esad_lib.config import CHOICES
    from esad_lib.method import FILLS, UNET_KINDS, build_model
    from esad_lib.method.anomaly_map import SMOOTHINGS
    from esad_lib.method.loss import FeatureLoss

    assert set(CHOICES["profile"]) == set(PRESETS)
    assert set(CHOICES["train_fill"]) == set(CHOICES["test_fill"]) == set(FILLS)
    assert set(CHOICES["unet"]) == set(UNET_KINDS)
    extractors = set(features.EXTRACTORS)
    assert set(CHOICES["feature_extractor"]) == set(CHOICES["loss_feature_extractor"]) == extractors
    assert set(CHOICES["score_map"]) == set(scoring.SCORE_MAPS)
    assert set(CHOICES["smoothing"]) == set(SMOOTHINGS)
    trained = set(CHOICES["method"])  # PatchCore is a detector with its own config, not a method value
    assert trained == {"esad", "riad"}
    for method in trained:
        assert isinstance(build_model(get_config("smoke", method=method)), nn.Module)

    class Identity(nn.Module):
        def forward(self, x):
            return [x]

    x = torch.rand(1, 3, 16, 16)
    for distance in CHOICES["feature_loss_distance"]:
        assert float(FeatureLoss(Identity(), distance=distance)(x, 1 - x)) > 0


def test_set_overrides_of_text_settings_accept_only_allowed_values() -> None:
    from esad_lib.overrides import parse_overrides

    assert parse_overrides(["test_fill=zero", "smoothing=none"]) == {"test_fill": "zero", "smoothing": "none"}
    with pytest.raises(ValueError, match="--set test_fill: 'zeros' is not one of: .*did you mean zero"):
        parse_overrides(["test_fill=zeros"])
