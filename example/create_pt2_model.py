"""Create the AOTInductor (.pt2) examples with torch_serving.package().

``model-example.pt2`` is the nearest to the original example model that
torch.export supports: the same weights (seed 0) and tensor arguments
(``tensor_list``, ``single_tensor``, ``tensor_dict``), without the int and
the string, which export would bake into the program as constants. It
returns ``{"out": [hidden + y * 2, y + single_tensor + tensor_dict["y"]]}``
for a batch of 1 to 64 rows.

``classifier.pt2`` is the classifier of create_image_model.py (same
weights) over a batch of 1 to 64 float32 images ``[B, 3, H, W]`` of 16 to
1024 pixels a side, returning ``[B, 10]`` probabilities.

Each compile takes tens of seconds. Usage:
python example/create_pt2_model.py [FOLDER]  (default: the working directory)
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from create_image_model import Classifier  # noqa: E402
from create_model import ExampleModel  # noqa: E402

import torch_serving  # noqa: E402


class ExportableExample(ExampleModel):
    """The example model's tensor part, batched along the first dimension."""

    def forward(self, tensor_list, single_tensor, tensor_dict):  # type: ignore[override]
        x, y = tensor_list[0], tensor_list[1]
        hidden = self.fc3(self.fc2(self.fc1(x + tensor_dict["x"])))
        return {"out": [hidden + y * 2, y + single_tensor + tensor_dict["y"]]}


class BatchClassifier(Classifier):
    """The image classifier over a batch of images."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.softmax(self.head(self.features(images).flatten(1)), dim=1)


def main(folder: str = ".") -> None:
    """Write ``model-example.pt2`` and ``classifier.pt2`` into ``folder``."""
    folder_path = Path(folder)
    batch = torch.export.Dim("batch", min=1, max=64)

    torch.manual_seed(0)
    example = ExportableExample(2, 3)
    rows = torch.ones(2, 2), torch.ones(2, 3)
    example_args = ([rows[0], rows[1]], torch.ones(2, 3), {"x": torch.ones(2, 2), "y": torch.ones(2, 3)})
    dynamic = ([{0: batch}, {0: batch}], {0: batch}, {"x": {0: batch}, "y": {0: batch}})
    torch_serving.package(example, example_args, dynamic, folder_path / "model-example.pt2")

    torch.manual_seed(0)
    classifier = BatchClassifier()  # the weights first, drawn as create_image_model.py draws them
    side = {
        "height": torch.export.Dim("height", min=16, max=1024),
        "width": torch.export.Dim("width", min=16, max=1024),
    }
    images = torch.rand(2, 3, 48, 64)
    torch_serving.package(
        classifier, (images,), ({0: batch, 2: side["height"], 3: side["width"]},), folder_path / "classifier.pt2"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
