from decimal import Decimal

import pytest

from mlworkload.api.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("0.1", Decimal("0.1")),
        ("100m", Decimal("0.1")),
        ("16Gi", Decimal(16 * 2**30)),
        ("1.5G", Decimal("1.5e9")),
        ("128974848", Decimal(128974848)),
        ("129e6", Decimal("129e6")),
        ("123Mi", Decimal(123 * 2**20)),
        ("1Ki", Decimal(1024)),
        ("1k", Decimal(1000)),
        (".5", Decimal("0.5")),
        ("+1E3", Decimal(1000)),
    ],
)
def test_quantities_parse_to_exact_values(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_decimal_and_milli_forms_compare_equal() -> None:
    assert parse_quantity("0.1") == parse_quantity("100m")
    assert parse_quantity("1Gi") > parse_quantity("1G")


@pytest.mark.parametrize("text", ["", "16GB", "1.2.3", "abc", "1 Gi", "Gi", "1e", "--1"])
def test_malformed_quantities_are_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)
