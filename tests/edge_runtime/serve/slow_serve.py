"""`edge-serve` with every decode step slowed down, so that a test can stop it mid-request."""

from __future__ import annotations

import os
import sys
import time

from edge_runtime.engine import session

_step = session.Decoder.step
_DELAY = float(os.environ.get("SLOW_STEP_S", "0.02"))


def _slow_step(self, token):  # type: ignore[no-untyped-def]
    time.sleep(_DELAY)
    return _step(self, token)


session.Decoder.step = _slow_step  # type: ignore[method-assign]

if __name__ == "__main__":
    from edge_runtime.serve.cli import main

    sys.exit(main())
