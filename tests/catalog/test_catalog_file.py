"""The catalog file: what it may declare, each mistake named, and written back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from billfold.catalog.spec import Catalog, CatalogInvalid, parse_catalog, to_toml

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.toml"

STARTER = """
[[plans]]
code = "starter"
name = "Starter"
prices = { usd = 900 }
"""


def test_the_example_catalog_declares_the_trial_and_two_paid_plans() -> None:
    catalog = parse_catalog(EXAMPLE.read_text())
    assert [p.code for p in catalog.plans] == ["trial", "starter", "professional"]
    assert catalog.plans[1].prices == {"usd": 900, "eur": 900}
    assert catalog.plans[2].features.flags == {"api": True, "sso": True}
    assert [p.credits for p in catalog.credit_packages] == [1000, 5000, 20000]
    assert [p.name for p in catalog.products] == ["Sticker pack", "Billfold T-shirt"]


def test_a_catalog_written_out_reads_back_the_same() -> None:
    catalog = parse_catalog(EXAMPLE.read_text())
    odd = catalog.model_copy(
        update={
            "products": [
                catalog.products[0].model_copy(
                    update={"name": 'Stickers "2" \\ ünïcode', "description": "a\nb"}
                )
            ]
        }
    )
    for declared in (catalog, odd, Catalog()):
        assert parse_catalog(to_toml(declared)) == declared


def test_a_file_that_is_not_toml_is_refused_with_where() -> None:
    with pytest.raises(CatalogInvalid) as refused:
        parse_catalog('[[plans]]\ncode = "starter\n')
    assert refused.value.code == "catalog_invalid"
    assert "not valid TOML" in refused.value.message
    assert "line 2" in refused.value.message


def test_an_unknown_currency_is_refused_naming_the_plan_and_currency() -> None:
    with pytest.raises(CatalogInvalid) as refused:
        parse_catalog(STARTER.replace("usd", "usx"))
    assert refused.value.code == "unknown_currency"
    assert "plans[0].prices.usx" in refused.value.message


def test_a_negative_amount_is_refused_naming_where() -> None:
    with pytest.raises(CatalogInvalid) as refused:
        parse_catalog(STARTER.replace("900", "-900"))
    assert "plans[0].prices.usd" in refused.value.message
    assert "greater than or equal to 0" in refused.value.message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (STARTER.replace("900", "9.5"), "plans[0].prices.usd"),  # no floats for money
        (STARTER.replace('"Starter"', '""'), "plans[0].name"),
        (STARTER + 'interval = "fortnight"\n', "plans[0].interval"),
        (STARTER + "colour = 1\n", "plans[0].colour"),
        (STARTER + STARTER, "'starter' is declared twice"),
        (
            '[[credit_packages]]\nname = "x"\ncredits = 0\nprice = 1\ncurrency = "usd"\n',
            "credit_packages[0].credits",
        ),
        ('[[products]]\nname = "x"\nunit_amount = 1\ncurrency = "EURO"\n', "products[0].currency"),
    ],
)
def test_other_mistakes_are_refused_naming_where(text: str, where: str) -> None:
    with pytest.raises(CatalogInvalid) as refused:
        parse_catalog(text)
    assert where in refused.value.message
