"""Fuzz the whole request path (Falcon app, model root, native pipeline).

The first input byte picks a model, the rest is the body. Any answer other
than a success or a client error in the envelope, or any change to what a
known-good request gets afterwards, is a crash.
Run: python tests/fuzz/fuzz_request.py tests/fuzz/corpus -max_total_time=60
"""

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import falcon.testing

    from tests.models import AffineModel, EchoModel, KindsModel, example_model_class, script_and_save
    from torch_serving import Config, create_app

ROOT = Path(tempfile.mkdtemp(prefix="torch-serving-fuzz-"))
MODELS = ["tiny.pt", "echo.pt", "kinds.pt", "model-example.pt"]
GOLDEN = b'[{"type": "tensor", "value": [[1.0, 2.0]]}]'
script_and_save(AffineModel(), ROOT / "tiny.pt")
script_and_save(EchoModel(), ROOT / "echo.pt")
script_and_save(KindsModel(), ROOT / "kinds.pt")
example_model_class().main(str(ROOT / "model-example.pt"))
CLIENT = falcon.testing.TestClient(create_app(Config(model_root=ROOT, max_body_size=1 << 20)))
EXPECTED = CLIENT.simulate_post("/serve", query_string="servable_identifier=tiny.pt", body=GOLDEN).json


def test_one_input(data: bytes) -> None:
    if not data:
        return
    model = MODELS[data[0] % len(MODELS)]
    result = CLIENT.simulate_post("/serve", query_string=f"servable_identifier={model}", body=data[1:])
    if result.status_code not in (200, 400):
        raise AssertionError(f"{model} answered {result.status_code}: {result.text[:500]}")
    doc = json.loads(result.text)
    if doc["code"] != result.status_code:
        raise AssertionError(f"envelope code {doc['code']} for status {result.status_code}")
    golden = CLIENT.simulate_post("/serve", query_string="servable_identifier=tiny.pt", body=GOLDEN).json
    if golden != EXPECTED:
        raise AssertionError(f"a known-good request changed its answer: {golden}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
