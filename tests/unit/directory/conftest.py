"""Unit tests of the directory sync: no server needed."""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, so that ``tests.unit.directory.memory_target`` imports however
# pytest is started.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
