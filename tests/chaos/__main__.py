"""``python -m tests.chaos``: run the chaos soak (see tests/chaos/soak.py)."""

from __future__ import annotations

if __name__ == "__main__":
    from tests.chaos.soak import main

    raise SystemExit(main())
