"""Generated documents -> TOML text, for the fuzzers (no TOML writer is a dependency).

Everything is written inline (`key = {a = 1, b = [{c = 2}]}`), which TOML allows for every shape a
policy or job spec has. Strings and keys go through json.dumps (ensure_ascii=False): JSON's escapes
are TOML's. nan and inf are TOML's own words.
"""

from __future__ import annotations

import json
import math
from typing import Any


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def document(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {value(v)}\n" for k, v in doc.items())
