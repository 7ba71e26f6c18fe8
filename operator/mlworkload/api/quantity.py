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
    return value * (Decimal(10) ** int(suffix[1:]))


def _normalise(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string such as '2' or '16Gi', not a boolean")
    if isinstance(value, int | float | Decimal):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"a quantity must be a number or a string such as '16Gi', not {type(value).__name__}")
    parse_quantity(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_normalise),
    PlainSerializer(lambda value: value, return_type=str),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
"""A quantity kept as the user wrote it (so round trips change nothing), validated on input."""
