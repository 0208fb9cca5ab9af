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
