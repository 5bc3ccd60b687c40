"""`qms-runtime` whose start-up waits at gates the test opens, for tests: run as
`python gated_start_serve.py serve ...`.

Before hashing the k-th listed file the server waits for `$QMS_TEST_GATES/file-k`, and
before loading the model for `$QMS_TEST_GATES/load`: so a test sees each step of the
start-up, in order, without timing anything. Nothing else changes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def _wait(gate: Path) -> None:
    while not gate.exists():
        time.sleep(0.02)


def install() -> None:
    from qms_runtime import lifecycle
    from qms_runtime.models import checksums

    gates = Path(os.environ["QMS_TEST_GATES"])
    real_digest, real_load = checksums.file_digest, lifecycle.load_model
    hashed = [0]

    def file_digest(*args: Any, **kwargs: Any) -> str:
        hashed[0] += 1
        _wait(gates / f"file-{hashed[0]}")
        return real_digest(*args, **kwargs)

    def load_model(*args: Any, **kwargs: Any) -> Any:
        _wait(gates / "load")
        return real_load(*args, **kwargs)

    checksums.file_digest = file_digest  # type: ignore[assignment]
    lifecycle.load_model = load_model  # type: ignore[assignment]


if __name__ == "__main__":
    install()
    from qms_runtime.cli import main

    sys.exit(main(sys.argv[1:]))
