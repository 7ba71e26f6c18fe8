"""Kubernetes resource quantities ("500m", "16Gi", "1e3"), parsed exactly.

Decimal arithmetic, not float: "0.1" CPU must compare equal to "100m".
"""

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# The grammar of k8s.io/apimachinery/pkg/api/resource, as published in the Kubernetes OpenAPI.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
# Requests are never negative: the same grammar without a sign, as the CRD carries it.
NON_NEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace(r"^(\+|-)?", r"^\+?", 1)
# The API server keeps quantities as int64 milli-units at most; anything larger is refused there.
MAX_QUANTITY = Decimal(2**63 - 1) / 1000
_MAX_EXPONENT = 30
_NUMBER_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

GIB = Decimal(2**30)


def parse_quantity(text: str) -> Decimal:
    """Returns the value of a Kubernetes quantity in base units (cores, bytes).

    Raises ValueError with the accepted forms when the text is not a quantity.
    """
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: '500m', '2', '16Gi', '1.5G')")
    match = _NUMBER_RE.match(text)
    assert match is not None  # guaranteed by the pattern above
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation as error:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from error
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    exponent = int(suffix[1:])
    if abs(exponent) > _MAX_EXPONENT:  # 1e999999999 would overflow Decimal; no real quantity is near
        raise ValueError(f"{text!r} is out of range for a Kubernetes quantity")
    return value * (Decimal(10) ** exponent)


def _normalise(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string such as '2' or '16Gi', not a boolean")
    if isinstance(value, int | float | Decimal):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"a quantity must be a number or a string such as '16Gi', not {type(value).__name__}")
    amount = parse_quantity(value)
    if amount < 0:
        raise ValueError(f"{value!r} is negative; a request is zero or more")
    if amount > MAX_QUANTITY:
        raise ValueError(f"{value!r} is out of range for a Kubernetes quantity")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_normalise),
    PlainSerializer(lambda value: value, return_type=str),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": NON_NEGATIVE_QUANTITY_PATTERN}),
]
"""A non-negative quantity kept as the user wrote it (so round trips change nothing), validated on input."""
