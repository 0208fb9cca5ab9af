"""Reader of the LOCO layout (esad_lib.data.loco) on the hand-built tiny tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_loco import TINY_IDS, TINY_SIZES, make_tiny_loco

from esad_lib.config import get_config
from esad_lib.data import (
    DatasetLayoutError,
    LOCODataset,
    categories,
    collate_keep_lists,
    dataset_root,
    list_samples,
    load_channel_masks,
    load_defects_config,
    load_image,
    union_mask,
)


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny_loco(tmp_path / "loco")


def test_categories_and_samples_ignore_stray_files(tiny):
    assert categories(tiny) == sorted(TINY_SIZES)
    train = list_samples(tiny, "pushpins", "train")
    assert [s.image_id for s in train] == TINY_IDS["train/good"]  # non-contiguous ids kept, sorted
    test = list_samples(tiny, "pushpins", "test")
    assert [(s.label, s.image_id) for s in test] == (
        [("good", i) for i in TINY_IDS["test/good"]]
        + [("logical", i) for i in TINY_IDS["test/logical_anomalies"]]
        + [("structural", i) for i in TINY_IDS["test/structural_anomalies"]]
    )
    assert all(s.path.suffix == ".png" for s in list_samples(tiny, "pushpins"))
    assert len(list_samples(tiny, "pushpins")) == sum(len(v) for v in TINY_IDS.values())
    assert [s.label for s in list_samples(tiny, "pushpins", "test", labels=["structural"])] == [
        "structural"
    ] * 3


def test_two_masks_kept_as_channels(tiny):
    s = next(s for s in list_samples(tiny, "breakfast_box", "test", ["logical"]) if s.image_id == "000")
    assert [p.name for p in s.mask_paths] == ["000.png", "001.png"]
    ch = load_channel_masks(s)
    w, h = TINY_SIZES["breakfast_box"]
    assert ch.shape == (2, h, w) and ch.dtype == np.uint8
    assert set(np.unique(ch[0])) == {0, 255} and set(np.unique(ch[1])) == {0, 200}
    u = union_mask(ch)
    assert u.dtype == bool and u.sum() == (ch[0] > 0).sum() + (ch[1] > 0).sum()  # disjoint regions
    good = list_samples(tiny, "breakfast_box", "test", ["good"])[0]
    assert load_channel_masks(good).shape == (0, h, w)
    assert not union_mask(load_channel_masks(good)).any()


def test_defects_config(tiny):
    specs = load_defects_config(tiny / "pushpins")
    assert [d.pixel_value for d in specs] == [255, 200, 100]
    assert specs[0].relative_saturation is False and specs[0].saturation_threshold == 30


def test_bad_files_raise_clear_errors(tiny):
    s = list_samples(tiny, "pushpins", "train")[0]
    data = s.path.read_bytes()
    s.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetLayoutError, match=str(s.path)):
        load_image(s.path)
    a = list_samples(tiny, "pushpins", "test", ["structural"])[0]
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(a.mask_paths[0])
    with pytest.raises(DatasetLayoutError, match="differs from its image"):
        load_channel_masks(a)
    with pytest.raises(DatasetLayoutError, match="no such category"):
        list_samples(tiny, "screw_bag")
    (tiny / "pushpins" / "defects_config.json").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match="defects_config.json"):
        load_defects_config(tiny / "pushpins")


def test_missing_ground_truth_is_an_error(tiny):
    import shutil

    shutil.rmtree(tiny / "pushpins" / "ground_truth" / "structural_anomalies" / "001")
    s = list_samples(tiny, "pushpins", "test", ["structural"])[0]
    assert s.mask_paths == []
    with pytest.raises(DatasetLayoutError, match="without ground truth"):
        load_channel_masks(s)


def test_dataset_items_and_collate(tiny):
    ds = LOCODataset(tiny, "breakfast_box", "test", image_size=(8, 12), return_channels=True)
    assert len(ds) == 7
    item = ds[2]  # logical 000: two channels
    assert item["image"].shape == (3, 8, 12) and item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == (1, 8, 12) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["label"] == 1 and item["label_name"] == "logical"
    assert tuple(item["orig_size"].tolist()) == (16, 20)
    assert item["channels"].shape == (2, 16, 20)
    # mask == nearest resize of the union of the channels
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    u = torch.from_numpy(union_mask(item["channels"])).to(torch.uint8)[None]
    ref = tvf.resize(u, [8, 12], interpolation=InterpolationMode.NEAREST).float()
    assert torch.equal(item["mask"], ref)
    # image: [0, 255] -> [-1, 1] of the resized picture
    raw = torch.from_numpy(load_image(ds.samples[2].path)).permute(2, 0, 1).float()
    ref_img = tvf.resize(raw, [8, 12], antialias=True) / 127.5 - 1
    assert torch.allclose(item["image"], ref_img.clamp(-1, 1), atol=1e-5)
    batch = collate_keep_lists([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (7, 3, 8, 12) and batch["label"].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert [c.shape[0] for c in batch["channels"]] == [0, 0, 2, 1, 1, 1, 1]
    assert batch["orig_size"].shape == (7, 2)


def test_dataset_root_rule(tiny, tmp_path, monkeypatch):
    cfg = get_config("smoke")
    with pytest.raises(DatasetLayoutError, match="no such folder"):
        dataset_root(cfg.replace(dataset=str(tmp_path / "nope")))
    with pytest.raises(DatasetLayoutError, match="not a LOCO-layout root"):
        dataset_root(cfg.replace(dataset=str(tmp_path)))
    with pytest.raises(DatasetLayoutError, match="no category 'screw_bag'"):
        dataset_root(cfg.replace(dataset=str(tiny), category="screw_bag"))
    assert dataset_root(cfg.replace(dataset=str(tiny), category="pushpins")) == tiny
    # "auto": the real dataset when the data root holds it, else the synthetic benchmark
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("ESAD_DATA_ROOT", str(data))
    tiny.rename(data / "mvtec_loco_anomaly_detection")
    assert (
        dataset_root(cfg.replace(dataset="auto", category="pushpins"))
        == data / "mvtec_loco_anomaly_detection"
    )


def test_decoded_items_are_cached_copied_and_refreshed_when_the_file_changes(tiny, monkeypatch):
    from esad_lib.data import loco

    monkeypatch.setattr(loco, "_ITEMS", loco.OrderedDict())
    ds = LOCODataset(tiny, "breakfast_box", "test", image_size=(8, 12), return_channels=True)
    first = ds[2]
    calls = []
    real = loco.load_image
    monkeypatch.setattr(loco, "load_image", lambda p: calls.append(p) or real(p))
    again = LOCODataset(tiny, "breakfast_box", "test", image_size=(8, 12), return_channels=True)[2]
    assert calls == []  # another dataset of the same files: no decoding
    assert torch.equal(first["image"], again["image"])
    assert np.array_equal(first["channels"], again["channels"])
    again["image"].zero_()
    again["channels"][:] = 0
    third = ds[2]
    assert torch.equal(third["image"], first["image"]) and third["channels"].any()  # the cache kept its copy
    # another input size is another item; a rewritten file is decoded again
    LOCODataset(tiny, "breakfast_box", "test", image_size=(4, 4))[2]
    assert len(calls) == 1
    path = ds.samples[2].path
    Image.fromarray(np.full((16, 20, 3), 200, np.uint8)).save(path)
    fresh = ds[2]
    assert len(calls) == 2
    assert torch.allclose(fresh["image"], torch.full_like(fresh["image"], 200 / 127.5 - 1))
    # a bounded cache: the least recently used items go first
    monkeypatch.setattr(loco, "ITEM_CACHE_SIZE", 2)
    for i in range(len(ds)):
        ds[i]
    assert len(loco._ITEMS) == 2
