from __future__ import annotations

from .dictionary import (
    LUMA_BT601,
    AntialiasResized,
    CheckImaged,
    DropNoneCollate,
    SkipNoneCompose,
    ToChannelsd,
    to_channels,
)

__all__ = [
    "LUMA_BT601",
    "AntialiasResized",
    "CheckImaged",
    "DropNoneCollate",
    "SkipNoneCompose",
    "ToChannelsd",
    "to_channels",
]
