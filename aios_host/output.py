"""How every command prints machine-readable output (--json): one indented, key-sorted document."""

from __future__ import annotations

import json
import sys


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
