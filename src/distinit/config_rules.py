"""The rules a config field carries (`checked`), and how a value is held to them.

`config.py` declares the fields; this module says what `min`, `max`, `choices`, `sizes` and
`distinct` mean, and reads whole numbers written as floats or text (1e8) as ints.
"""

from __future__ import annotations

import decimal
import operator
import re
import typing
from dataclasses import field
from typing import Any

from distinit.errors import UserError


class ConfigError(UserError):
    pass


# Rules a field may carry in its metadata: bounds apply to a number, or to each item of a list.
BOUNDS = {"min": (operator.ge, ">="), "gt": (operator.gt, ">"),
          "max": (operator.le, "<="), "lt": (operator.lt, "<")}
# strings; list lengths; the reason for a max; a list whose items must differ
RULES = {*BOUNDS, "choices", "sizes", "why", "distinct"}
# Any other whole number a user sets: far above every meaningful value, and small enough that
# nothing derived from it (seed x 100003 + pass, steps x batch) overflows a 64-bit integer.
MAX_INT = 2**31 - 1


def checked(default: Any, **rules: Any) -> Any:
    """A dataclass field whose values loading checks against `rules`, e.g.
    `checked(8, min=1)`, `checked(0.01, gt=0)`, `checked("sgd", choices=("sgd", "adamw"))`."""
    unknown = set(rules) - RULES
    if unknown:
        raise TypeError(f"unknown field rules {sorted(unknown)}; valid: {sorted(RULES)}")
    if isinstance(default, list):  # each instance gets its own copy
        return field(default_factory=lambda: list(default), metadata=rules)
    return field(default=default, metadata=rules)


# A number written as text: YAML 1.1 reads 1e-4 and 5e-3 (no dot, or no exponent sign) as strings.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def whole(value: Any) -> Any:
    """A whole number written as a float or as text (8.0, 1e8) as an int; anything else as is."""
    if isinstance(value, float) or (isinstance(value, str) and NUMBER.fullmatch(value.strip())):
        number = decimal.Decimal(value.strip() if isinstance(value, str) else value)  # exact
        # Up to 1e400, so that 1e20 meets its field's bound rather than a type error.
        if number.is_finite() and number == number.to_integral_value() and number.adjusted() < 400:
            return int(number)
    return value


def check_rules(value: Any, rules: typing.Mapping[str, Any], key: str) -> None:
    """Enforce a field's `checked` rules on its coerced value."""
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, rules['choices']))}; got "
                          f"{value!r}")
    if "sizes" in rules and len(value) not in rules["sizes"]:
        sizes = " or ".join(str(n) for n in rules["sizes"])
        raise ConfigError(f"{key} must have {sizes} values, got {len(value)}: {value!r}")
    if rules.get("distinct") and len(set(value)) < len(value):
        twice = sorted({v for v in value if value.count(v) > 1})
        raise ConfigError(f"{key} lists {', '.join(map(str, twice))} more than once: {value!r}; "
                          "each must appear once")
    items = enumerate(value) if isinstance(value, list) else [(None, value)]
    for i, v in items:
        if type(v) is int and "max" not in rules and "lt" not in rules:
            rules = {**rules, "max": MAX_INT}  # every whole number has a bound
        for rule, (ok, op) in BOUNDS.items():
            if rule in rules and not ok(v, rules[rule]):
                where = key if i is None else f"{key}[{i}]"
                why = f": {rules['why']}" if rule == "max" and "why" in rules else ""
                raise ConfigError(f"{where} must be {op} {rules[rule]}, got {v!r}{why}")
