"""The documented CreateOption rules: every Problem names the field and the rule it breaks."""

from __future__ import annotations

from typing import Any

import pytest

from worker.enos.validation import (
    Problem,
    check_create_option,
    is_valid_device_key,
    is_valid_timezone,
)


def valid(**changes: Any) -> dict[str, Any]:
    device: dict[str, Any] = {
        "productKey": "pk-meter",
        "deviceName": {"defaultValue": "Meter 1", "i18nValue": {"zh_CN": "电表 1"}},
        "timezone": "+08:00",
        "deviceKey": "meter-0001",
        "deviceAttributes": {"serial": 111111},
        "deviceDesc": "a meter",
        "deviceTags": {"site/area": "north"},
    }
    device.update(changes)
    return {key: value for key, value in device.items() if value is not None}


def test_a_valid_option_has_no_problem() -> None:
    assert check_create_option(valid()) == []


def test_mandatory_fields_are_each_named() -> None:
    problems = check_create_option(valid(productKey=None, deviceName=None, timezone=None))
    assert problems == [
        Problem("productKey", "is mandatory"),
        Problem("deviceName", "is mandatory"),
        Problem("timezone", "is mandatory"),
    ]


def test_all_problems_of_a_row_are_reported_at_once() -> None:
    problems = check_create_option(
        valid(deviceKey="ab", timezone="+8:00", deviceTags={"bad key!": " padded"}, extra=1)
    )
    assert [p.field for p in problems] == [
        "extra",
        "timezone",
        "deviceKey",
        "deviceTags.bad key!",
        "deviceTags.bad key!",
    ]
    assert str(problems[0]) == "extra: is not a CreateOption field"
    assert str(problems[2]) == (
        "deviceKey: 'ab' must be 4-64 characters of letters, digits, '-', '_' and '.'"
    )
    assert "UTC offset like +08:00" in problems[1].message
    assert problems[3].message == "tag key must be 1-50 letters, digits, '_', '/' or '-'"
    assert problems[4].message == "tag value must not start or end with whitespace"


def test_device_name_rules() -> None:
    name = {"defaultValue": "  ", "i18nValue": {"fr_FR": "Compteur"}, "other": 1}
    assert check_create_option(valid(deviceName=name)) == [
        Problem("deviceName.defaultValue", "is mandatory and must not be blank"),
        Problem("deviceName.other", "is not a StringI18n field"),
        Problem("deviceName.fr_FR", "locale must be one of en_US, es_ES, ja_JP, zh_CN"),
    ]


def test_attribute_and_tag_limits() -> None:
    problems = check_create_option(
        valid(
            deviceAttributes={"s": "x" * 4001, "a": list(range(1025)), "n": None},
            deviceTags={f"t{i}": "v" for i in range(101)},
        )
    )
    assert problems == [
        Problem("deviceAttributes.s", "string value is longer than 4000 characters"),
        Problem("deviceAttributes.a", "array has more than 1024 elements"),
        Problem("deviceAttributes.n", "must not be null"),
        Problem("deviceTags", "has 101 tags, at most 100"),
    ]


def test_not_an_object() -> None:
    assert check_create_option(["pk"]) == [Problem("device", "must be an object, got array")]


DEVICE_KEYS = [
    ("abcd", True),
    ("a" * 64, True),
    ("A-b_c.9", True),
    ("abc", False),
    ("a" * 65, False),
    ("with space", False),
    ("ключ", False),
    ("a/bcd", False),
]
TIMEZONES = [
    ("+08:00", True),
    ("-05:00", True),
    ("+14:00", True),
    ("America/Los_Angeles", True),
    ("+8:00", False),
    ("+15:00", False),
    ("Z", False),
    ("UTC+08:00", False),
    ("Mars/Base", False),
]


@pytest.mark.parametrize(("key", "ok"), DEVICE_KEYS)
def test_device_key_rule(key: str, ok: bool) -> None:
    assert is_valid_device_key(key) is ok


@pytest.mark.parametrize(("zone", "ok"), TIMEZONES)
def test_timezone_rule(zone: str, ok: bool) -> None:
    assert is_valid_timezone(zone) is ok
