"""Fuzz the V2 inference path (binary framing, JSON header, input binding).

The first input byte picks a model and whether the next two bytes give an
Inference-Header-Content-Length; the rest is the body. Any answer other
than a success or a 400 in the V2 envelope, or any change to what a
known-good request gets afterwards, is a crash.
Run: python tests/fuzz/fuzz_v2.py tests/fuzz/corpus_v2 -max_total_time=60
"""

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import falcon.testing

    from tests.models import AffineModel, EchoModel, PairModel, ScalarsModel, WordsModel, script_and_save
    from torch_serving import Config, create_app

ROOT = Path(tempfile.mkdtemp(prefix="torch-serving-fuzz-v2-"))
MODELS = {
    "tiny": AffineModel(),
    "echo": EchoModel(),
    "pair": PairModel(),
    "words": WordsModel(),
    "scalars": ScalarsModel(),
}
for name, model in MODELS.items():
    script_and_save(model, ROOT / f"{name}.pt")
NAMES = list(MODELS)
GOLDEN = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode()
CLIENT = falcon.testing.TestClient(create_app(Config(model_root=ROOT, max_body_size=1 << 20)))
EXPECTED = CLIENT.simulate_post("/v2/models/tiny/infer", body=GOLDEN).json


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    model = NAMES[data[0] % len(NAMES)]
    headers = {}
    if data[0] & 0x80:
        headers["Inference-Header-Content-Length"] = str(int.from_bytes(data[1:3], "little"))
    result = CLIENT.simulate_post(f"/v2/models/{model}/infer", body=data[3:], headers=headers)
    if result.status_code not in (200, 400):
        raise AssertionError(f"{model} answered {result.status_code}: {result.text[:500]}")
    if result.status_code == 400 and set(json.loads(result.text)) != {"error"}:
        raise AssertionError(f"not the V2 error envelope: {result.text[:500]}")
    golden = CLIENT.simulate_post("/v2/models/tiny/infer", body=GOLDEN).json
    if golden != EXPECTED:
        raise AssertionError(f"a known-good request changed its answer: {golden}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
