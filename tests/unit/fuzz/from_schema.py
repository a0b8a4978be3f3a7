"""Documents from a JSON Schema (the subset pydantic writes for our models), as hypothesis
strategies: what an editor checking against `aios-host policy schema` lets through.

hypothesis-jsonschema would be the library for this, but its 0.23.1 fails on the hypothesis this
project pins (AttributeError: 'many' object has no attribute 'more' in from_object_schema).
Optional keys are drawn or left out; null (TOML has none) leaves the key out.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_OMIT = object()


def strategy(schema: dict[str, Any]) -> st.SearchStrategy:
    defs = schema.get("$defs", {})

    def walk(s: dict[str, Any]) -> st.SearchStrategy:
        if "$ref" in s:
            return walk(defs[s["$ref"].rsplit("/", 1)[1]])
        if "anyOf" in s:
            return st.one_of([walk(x) for x in s["anyOf"]])
        if "enum" in s:
            return st.sampled_from(s["enum"])
        t = s.get("type")
        if t == "null":
            return st.just(_OMIT)
        if t == "boolean":
            return st.booleans()
        if t == "integer":
            hi = s.get("maximum", s["exclusiveMaximum"] - 1 if "exclusiveMaximum" in s else None)
            return st.integers(min_value=s.get("minimum"), max_value=hi)
        if t == "number":
            return st.floats(min_value=s.get("minimum"), max_value=s.get("maximum"),
                             allow_nan=False, allow_infinity=False)
        if t == "string":
            if "pattern" in s:
                return st.from_regex(s["pattern"], fullmatch=True)
            return st.text(max_size=s.get("maxLength", 20))
        if t == "array":
            return st.lists(walk(s.get("items", {})), max_size=3).map(lambda xs: [x for x in xs if x is not _OMIT])
        if t == "object" or "properties" in s:
            props = s.get("properties", {})
            required = set(s.get("required", ()))
            fixed = {k: walk(v) for k, v in props.items() if k in required}
            optional = {k: walk(v) for k, v in props.items() if k not in required}
            base = st.fixed_dictionaries(fixed, optional=optional)
            if isinstance(s.get("additionalProperties"), dict):
                base = st.tuples(base, st.dictionaries(st.from_regex(r"^\d+:\d+$", fullmatch=True),
                                                       walk(s["additionalProperties"]), max_size=2)
                                 ).map(lambda ab: {**ab[1], **ab[0]})
            return base.map(lambda d: {k: v for k, v in d.items() if v is not _OMIT})
        return st.nothing()

    return walk(schema)
