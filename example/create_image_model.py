"""Create the image example: a small convolutional classifier and a picture
to send it, both made by code (nothing is downloaded).

``classifier.pt`` takes one image as a float32 tensor [3, H, W] with values
in [0, 1] (what ``{"type": "image", "data_type": "float32"}`` decodes to)
and returns the probabilities of its 10 classes. Its weights come from a
fixed seed, so it is deterministic but untrained: the probabilities show
the round trip, not a real prediction. ``picture.jpg`` is a 64 x 48 JPEG
(quality 90) of a disc on a gradient.

Usage: python example/create_image_model.py [FOLDER]  (default: the working directory)
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class Classifier(torch.nn.Module):
    """Two convolutions, global average pooling and a linear layer over 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.features(image.unsqueeze(0)).flatten(1)
        return torch.softmax(self.head(features), dim=1).squeeze(0)


def picture(width: int = 64, height: int = 48) -> Image.Image:
    """A disc on a gradient, drawn with numpy."""
    y, x = np.mgrid[0:height, 0:width]
    disc = (x - width * 0.6) ** 2 + (y - height * 0.5) ** 2 < (height * 0.3) ** 2
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], axis=-1)
    rgb[disc] = (230, 60, 40)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def main(folder: str = ".") -> None:
    """Save ``classifier.pt`` and ``picture.jpg`` in ``folder``."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\S+` is deprecated", category=DeprecationWarning)
        torch.jit.script(Classifier().eval()).save(str(Path(folder) / "classifier.pt"))
    picture().save(Path(folder) / "picture.jpg", "JPEG", quality=90)


if __name__ == "__main__":
    main(*sys.argv[1:])
