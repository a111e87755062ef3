"""FDXML as the seed shows it, with hostile text surviving a real XML parser unchanged."""

from __future__ import annotations

from urllib.parse import parse_qs

from gateway.protocols.xml import parse_untrusted
from gateway.reporting.codes import TABLE, FailCode, FailureKind, code_of, flag_names, markdown_table
from gateway.reporting.fdxml import FORM_FIELD, FailEntry, fail_date, form_body, render

HOSTILE = 'a "quoted" <tag> & ampersand\nnew line\ttab \x01control'


def entry(**overrides: object) -> FailEntry:
    base: dict[str, object] = dict(id=10025, keyword="BigAl", fail_code=1, numbers="8185551234", send_id="0",
                                   primary_fail_date=1375622581.0, primary_error="Not Sent:No OptIn",
                                   secondary_fail_date=None, secondary_error="")
    base.update(overrides)
    return FailEntry(**base)  # type: ignore[arg-type]


def test_the_seed_example_renders_in_the_seed_shape() -> None:
    xml = render([entry(), entry(id=10026, fail_code=2, numbers="8185554321")])
    assert xml.splitlines()[0] == '<FailData Entries="2">'
    assert xml.splitlines()[1] == (
        '<FailEntry ID="10025" Keyword="BigAl" FailCode="1" Numbers="8185551234" SendID="0" '
        'PrimaryFailDate="8/4/2013 1:23:01 PM" PrimaryError="Not Sent:No OptIn" SecondaryFailDate="" '
        'SecondaryError="" />')
    assert xml.splitlines()[-1] == "</FailData>"


def test_dates_use_the_seeds_twelve_hour_format_in_utc() -> None:
    assert fail_date(1375622581.0) == "8/4/2013 1:23:01 PM"
    assert fail_date(1375574400.0) == "8/4/2013 12:00:00 AM"  # midnight
    assert fail_date(1375617600.0) == "8/4/2013 12:00:00 PM"  # noon
    assert fail_date(None) == ""


def test_hostile_text_is_escaped_and_parses_back_unchanged() -> None:
    xml = render([entry(keyword=HOSTILE, primary_error=HOSTILE, secondary_error="</FailData><x/>")])
    root = parse_untrusted(xml.encode())
    (element,) = root
    expected = HOSTILE.replace("\x01", "")  # XML 1.0 cannot carry control characters: dropped
    assert element.get("Keyword") == expected and element.get("PrimaryError") == expected
    assert element.get("SecondaryError") == "</FailData><x/>"
    assert root.get("Entries") == "1" and len(root) == 1


def test_the_form_body_carries_the_xml_in_the_fdxml_variable() -> None:
    body = form_body([entry(primary_error="a&b=c")])
    (value,) = parse_qs(body.decode())[FORM_FIELD]
    assert value == render([entry(primary_error="a&b=c")])


def test_every_kind_has_a_code_and_flags_combine() -> None:
    assert set(TABLE) == set(FailureKind)
    assert code_of(FailureKind.ALTERNATE_DELIVERY_FAILED) == 2112
    assert flag_names(2112) == ["CARRIER_SUBMISSION_REDIRECT", "CARRIER"]
    assert flag_names(FailCode.OTHER | 1 | 65536) == ["REQUEST", "OTHER", "65536"]
    assert {int(c) for c in FailCode} == {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 2048, 32768}
    assert markdown_table().count("\n") == len(TABLE) + 1


def test_the_readme_carries_the_code_table_as_the_code_has_it() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert markdown_table() in readme
