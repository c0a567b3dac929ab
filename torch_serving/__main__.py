"""Allow ``python -m torch_serving``."""

from torch_serving.cli import main

raise SystemExit(main())
