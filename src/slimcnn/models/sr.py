"""Super-resolution nets of the zoo: SRCNN, FSRCNN, ESPCN and VDSR.

Every net takes the luminance (Y) channel in [0, 1] as ``Tensor[N, 1, H, W]``. SRCNN and VDSR
take the bicubic-upscaled image (``sr_input="upsampled"``) and return the same size; FSRCNN and
ESPCN take the low-resolution image (``sr_input="lr"``) and return ``scale``× larger.
"""

from __future__ import annotations

from torch import Tensor, nn

from slimcnn.models._zoo import ModelInfo, ZooEntry, register_zoo_model

_SR_SCALES = (2, 3, 4)


def _check_scale(scale: int, name: str) -> int:
    from slimcnn.errors import ConfigError

    if not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"{name} needs an integer --scale >= 1 (2, 3 or 4 have weights), got {scale!r}")
    return scale


class SRCNN(nn.Module):
    """SRCNN 9-5-5 ([Dong et al. 2014](https://arxiv.org/abs/1501.00092)), 64/32 filters.

    Choice: convolutions are zero-padded ("same"), so the output has the input's size (the paper's
    valid convolutions shrink it by 12 pixels); the metric's border shave hides the difference.
    """

    def __init__(self, num_channels: int = 1, f1: int = 64, f2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_channels, f1, 9, padding=4)
        self.conv2 = nn.Conv2d(f1, f2, 5, padding=2)
        self.conv3 = nn.Conv2d(f2, num_channels, 5, padding=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Map the bicubic-upscaled ``x (Tensor[N, 1, H, W])`` to the restored image of the same size."""
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.conv3(x)


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m) ([Dong et al. 2016](https://arxiv.org/abs/1608.00367)) with PReLU.

    Module names (``first_part``, ``mid_part``, ``last_part``) fit the shared weights
    ``weights/fsrcnn/fsrcnn_x{2,3,4}.pth``; d=56, s=12, m=4 has 12,809 parameters.
    """

    def __init__(self, scale: int = 2, num_channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        scale = _check_scale(scale, "fsrcnn")
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(num_channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(
            d, num_channels, 9, stride=scale, padding=4, output_padding=scale - 1
        )

    def forward(self, x: Tensor) -> Tensor:
        """Upscale ``x (Tensor[N, 1, h, w])`` to ``Tensor[N, 1, h*scale, w*scale]``."""
        return self.last_part(self.mid_part(self.first_part(x)))


class ESPCN(nn.Module):
    """ESPCN ([Shi et al. 2016](https://arxiv.org/abs/1609.05158)): conv5-64, conv3-32, conv3-scale², pixel shuffle.

    Uses tanh as in the paper.
    """

    def __init__(self, scale: int = 2, num_channels: int = 1) -> None:
        super().__init__()
        scale = _check_scale(scale, "espcn")
        self.scale = scale
        self.conv1 = nn.Conv2d(num_channels, 64, 5, padding=2)
        self.conv2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, num_channels * scale * scale, 3, padding=1)
        self.act = nn.Tanh()
        self.pixel_shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        """Upscale ``x (Tensor[N, 1, h, w])`` to ``Tensor[N, 1, h*scale, w*scale]``."""
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.pixel_shuffle(self.conv3(x))


class _ConvReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


class VDSR(nn.Module):
    """VDSR ([Kim et al. 2016](https://arxiv.org/abs/1511.04587)): 20 bias-free 3×3 convs, global residual.

    One model serves ×2/×3/×4. Names ``input``, ``residual_layer.{0..17}.conv``, ``output`` fit
    ``weights/vdsr/vdsr_x234_state_dict.pth``; 664,704 parameters.
    """

    def __init__(self, num_channels: int = 1, width: int = 64, depth: int = 20) -> None:
        super().__init__()
        self.input = nn.Conv2d(num_channels, width, 3, padding=1, bias=False)
        self.residual_layer = nn.Sequential(*[_ConvReLU(width) for _ in range(depth - 2)])
        self.output = nn.Conv2d(width, num_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Restore the bicubic-upscaled ``x (Tensor[N, 1, H, W])``; same size out."""
        out = self.relu(self.input(x))
        out = self.residual_layer(out)
        return self.output(out) + x


def build_srcnn(scale: int = 3) -> SRCNN:
    """SRCNN (``scale`` is metadata only: the net works on upscaled input)."""
    _check_scale(scale, "srcnn")
    return SRCNN()


def build_fsrcnn(scale: int = 2) -> FSRCNN:
    """FSRCNN(56, 12, 4) for ``scale``."""
    return FSRCNN(scale=scale)


def build_espcn(scale: int = 2) -> ESPCN:
    """ESPCN for ``scale``."""
    return ESPCN(scale=scale)


def build_vdsr(scale: int = 2) -> VDSR:
    """VDSR (one model for every scale; ``scale`` is metadata for the task)."""
    _check_scale(scale, "vdsr")
    return VDSR()


def _fsrcnn_weights(scale: int = 2) -> str | None:
    return f"fsrcnn/fsrcnn_x{scale}.pth" if scale in _SR_SCALES else None


def _vdsr_weights(scale: int = 2) -> str | None:
    return "vdsr/vdsr_x234_state_dict.pth" if scale in _SR_SCALES else None


register_zoo_model(
    ZooEntry(
        name="srcnn",
        build=build_srcnn,
        info=ModelInfo(task="sr", input_shape=(1, 1, 33, 33), scale=3, sr_input="upsampled"),
        description="SRCNN 9-5-5 (64/32), bicubic-upscaled Y in, same-size Y out; no shared weights",
    )
)
register_zoo_model(
    ZooEntry(
        name="fsrcnn",
        build=build_fsrcnn,
        info=ModelInfo(task="sr", input_shape=(1, 1, 32, 32), scale=2, sr_input="lr"),
        weights=_fsrcnn_weights,
        description="FSRCNN(56,12,4), LR Y in; weights/fsrcnn/fsrcnn_x{2,3,4}.pth",
    )
)
register_zoo_model(
    ZooEntry(
        name="espcn",
        build=build_espcn,
        info=ModelInfo(task="sr", input_shape=(1, 1, 32, 32), scale=2, sr_input="lr"),
        description="ESPCN (tanh, pixel shuffle), LR Y in; no shared weights",
    )
)
register_zoo_model(
    ZooEntry(
        name="vdsr",
        build=build_vdsr,
        info=ModelInfo(task="sr", input_shape=(1, 1, 41, 41), scale=2, sr_input="upsampled"),
        weights=_vdsr_weights,
        description="VDSR (20 convs, 64 ch), bicubic-upscaled Y in; weights/vdsr/vdsr_x234_state_dict.pth",
    )
)
