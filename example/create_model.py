"""Create model-example.pt, the original torch-serving example model.

Its forward takes a list of tensors, a tensor, a dict of tensors, an int and
a string, and returns a dict holding a tuple of a tensor list, the string and
the int. The seed is fixed, so its outputs are the same on every machine.

With a batch policy (the JSON of a torch_serving.json), concurrent requests
share forwards: its string and int outputs are its own arguments, equal in
every request of a batch, so each request gets them as they are.

Usage: python example/create_model.py [OUTPUT [BATCH_POLICY]]
  (default model-example.pt, no batching), e.g.
  python example/create_model.py model-example-batched.pt '{"max_batch_size": 8}'
"""

import sys
import warnings
from typing import Dict, List, Tuple

import torch


class ExampleModel(torch.nn.Module):
    """A deliberately big MLP with interesting inputs and outputs."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, 10000)
        self.fc2 = torch.nn.Linear(10000, 1000)
        self.fc3 = torch.nn.Linear(1000, n_out)

    def forward(
        self,
        tensor_list: List[torch.Tensor],
        single_tensor: torch.Tensor,
        tensor_dict: Dict[str, torch.Tensor],
        an_integer: int,
        a_string: str,
    ) -> Dict[str, Tuple[List[torch.Tensor], str, int]]:
        x, y = tensor_list[0], tensor_list[1]
        hidden = self.fc3(self.fc2(self.fc1(x + tensor_dict["x"])))
        shifted = y + single_tensor + tensor_dict["y"] + an_integer
        return {"out": ([hidden + y * 2, shifted], a_string, an_integer)}


def main(output: str = "model-example.pt", batch_policy: str | None = None) -> None:
    """Script the example model and save it to ``output``, declaring ``batch_policy`` if given."""
    torch.manual_seed(0)
    extra_files = {} if batch_policy is None else {"torch_serving.json": batch_policy}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\S+` is deprecated", category=DeprecationWarning)
        torch.jit.script(ExampleModel(2, 3)).save(output, _extra_files=extra_files)


if __name__ == "__main__":
    main(*sys.argv[1:])
