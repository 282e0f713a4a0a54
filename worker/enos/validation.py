"""The documented rules for one CreateOption, in one place.

The simulator judges requests with these rules and the import checks every row with them before
anything is sent, so the two can never disagree. Sources are in the reference notes
(``docs/enos-api.md`` §1.1-§1.5: deviceKey, timezone, StringI18n, attributes, tags).

``check_create_option`` never raises: it returns every problem of the object, each naming the
field and the rule, so that an operator sees all of a row's mistakes at once.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from worker.readers.excerpt import EXCERPT_CHARS, excerpt

DEVICE_KEY_RE = re.compile(r"[A-Za-z0-9._-]{4,64}")
UTC_OFFSET_RE = re.compile(r"[+-](?:0\d|1[0-4]):[0-5]\d")
TAG_KEY_RE = re.compile(r"[A-Za-z0-9_/-]{1,50}")
ATTRIBUTE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")

#: Locales of ``deviceName.i18nValue`` that EnOS documents (console languages since 2.2).
LOCALES = frozenset({"en_US", "zh_CN", "ja_JP", "es_ES"})
MAX_TAGS = 100
MAX_TAG_VALUE = 200
MAX_ATTRIBUTES = 200
MAX_ATTRIBUTE_STRING = 4000
MAX_ATTRIBUTE_ARRAY = 1024

FIELDS = frozenset(
    {
        "productKey",
        "deviceName",
        "timezone",
        "deviceKey",
        "deviceAttributes",
        "deviceDesc",
        "deviceTags",
    }
)
NAME_FIELDS = frozenset({"defaultValue", "i18nValue"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: ``field`` is a dotted path into the CreateOption (``deviceTags.site``)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_valid_timezone(value: str) -> bool:
    """A UTC offset ``±HH:MM`` (no DST) or an IANA zone name such as ``America/Los_Angeles``."""
    if value in _GOOD_ZONES:
        return True
    valid = UTC_OFFSET_RE.fullmatch(value) is not None or value in _iana_zones()
    if valid:
        _remember(_GOOD_ZONES, value)
    return valid


# Names that passed their rule, so that a file's 100,000 rows with the same few tag keys,
# attribute ids and zones do not run the same regular expression 100,000 times. Bounded: a
# hostile file with a new name on every row only stops being remembered.
_GOOD_ZONES: set[str] = set()
_GOOD_TAG_KEYS: set[str] = set()
_GOOD_ATTRIBUTE_IDS: set[str] = set()
_REMEMBERED = 4096


def _remember(good: set[str], name: str) -> None:
    if len(good) < _REMEMBERED:
        good.add(name)


def _valid_name(good: set[str], pattern: re.Pattern[str], name: str) -> bool:
    if name in good:
        return True
    if pattern.fullmatch(name) is None:
        return False
    _remember(good, name)
    return True


def is_valid_device_key(value: str) -> bool:
    return DEVICE_KEY_RE.fullmatch(value) is not None


def check_create_option(obj: Any) -> list[Problem]:
    """Every documented rule that ``obj`` breaks, as a CreateOption; empty when it is valid."""
    if not isinstance(obj, dict):
        return [Problem("device", f"must be an object, got {_type_name(obj)}")]
    problems: list[Problem] = []
    # This runs for every device the simulator creates: the valid case allocates nothing extra.
    if not obj.keys() <= FIELDS:
        unknown = obj.keys() - FIELDS
        problems.extend(Problem(name, "is not a CreateOption field") for name in sorted(unknown))

    product_key = obj.get("productKey")
    if product_key is None:
        problems.append(Problem("productKey", "is mandatory"))
    elif not isinstance(product_key, str) or not product_key.strip():
        problems.append(Problem("productKey", "must be a non-empty string"))

    _check_name(obj.get("deviceName"), problems)

    timezone = obj.get("timezone")
    if timezone is None:
        problems.append(Problem("timezone", "is mandatory"))
    elif not isinstance(timezone, str) or not is_valid_timezone(timezone):
        problems.append(
            Problem(
                "timezone",
                f"{_shown(timezone)} is neither a UTC offset like +08:00 nor an IANA zone name "
                "like Asia/Shanghai",
            )
        )

    device_key = obj.get("deviceKey")
    if device_key is not None and (
        not isinstance(device_key, str) or DEVICE_KEY_RE.fullmatch(device_key) is None
    ):
        problems.append(
            Problem(
                "deviceKey",
                f"{_shown(device_key)} must be 4-64 characters of letters, digits, '-', '_' "
                "and '.'",
            )
        )

    desc = obj.get("deviceDesc")
    if desc is not None and not isinstance(desc, str):
        problems.append(Problem("deviceDesc", "must be a string"))

    attributes = obj.get("deviceAttributes")
    if attributes is not None:
        _check_attributes(attributes, problems)
    tags = obj.get("deviceTags")
    if tags is not None:
        _check_tags(tags, problems)
    return problems


def _check_name(name: Any, problems: list[Problem]) -> None:
    if name is None:
        problems.append(Problem("deviceName", "is mandatory"))
        return
    if not isinstance(name, dict):
        problems.append(Problem("deviceName", "must be an object with defaultValue"))
        return
    default = name.get("defaultValue")
    if not isinstance(default, str) or not default.strip():
        problems.append(Problem("deviceName.defaultValue", "is mandatory and must not be blank"))
    if not name.keys() <= NAME_FIELDS:
        problems.extend(
            Problem(f"deviceName.{key}", "is not a StringI18n field")
            for key in sorted(name.keys() - NAME_FIELDS)
        )
    i18n = name.get("i18nValue")
    if i18n is None:
        return
    if not isinstance(i18n, dict):
        problems.append(Problem("deviceName.i18nValue", "must be an object of locale to name"))
        return
    for locale, text in i18n.items():
        if locale not in LOCALES:
            problems.append(
                Problem(
                    f"deviceName.{locale}",
                    f"locale must be one of {', '.join(sorted(LOCALES))}",
                )
            )
        elif not isinstance(text, str):
            problems.append(Problem(f"deviceName.{locale}", "must be a string"))


def _check_attributes(attributes: Any, problems: list[Problem]) -> None:
    if not isinstance(attributes, dict):
        problems.append(Problem("deviceAttributes", "must be an object of attribute id to value"))
        return
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(
            Problem(
                "deviceAttributes", f"has {len(attributes)} attributes, at most {MAX_ATTRIBUTES}"
            )
        )
    for key, value in attributes.items():
        # The field path (deviceAttributes.<key>) is only built for a problem.
        if not _valid_name(_GOOD_ATTRIBUTE_IDS, ATTRIBUTE_ID_RE, key):
            problems.append(
                Problem(
                    f"deviceAttributes.{key}",
                    "attribute id must be 1-128 letters, digits, '_', '.' or '-'",
                )
            )
        if isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_STRING:
                problems.append(
                    Problem(
                        f"deviceAttributes.{key}",
                        f"string value is longer than {MAX_ATTRIBUTE_STRING} characters",
                    )
                )
        elif isinstance(value, list):
            if len(value) > MAX_ATTRIBUTE_ARRAY:
                problems.append(
                    Problem(
                        f"deviceAttributes.{key}",
                        f"array has more than {MAX_ATTRIBUTE_ARRAY} elements",
                    )
                )
        elif value is None:
            problems.append(Problem(f"deviceAttributes.{key}", "must not be null"))


def _check_tags(tags: Any, problems: list[Problem]) -> None:
    if not isinstance(tags, dict):
        problems.append(Problem("deviceTags", "must be an object of tag key to string value"))
        return
    if len(tags) > MAX_TAGS:
        problems.append(Problem("deviceTags", f"has {len(tags)} tags, at most {MAX_TAGS}"))
    for key, value in tags.items():
        # The field path (deviceTags.<key>) is only built for a problem.
        if not _valid_name(_GOOD_TAG_KEYS, TAG_KEY_RE, key):
            problems.append(
                Problem(
                    f"deviceTags.{key}", "tag key must be 1-50 letters, digits, '_', '/' or '-'"
                )
            )
        if not isinstance(value, str):
            problems.append(Problem(f"deviceTags.{key}", "tag value must be a string"))
        elif len(value) > MAX_TAG_VALUE:
            problems.append(
                Problem(f"deviceTags.{key}", f"tag value is longer than {MAX_TAG_VALUE} characters")
            )
        elif value != value.strip():
            problems.append(
                Problem(f"deviceTags.{key}", "tag value must not start or end with whitespace")
            )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _shown(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A rejected value in a message: escaped, and cut short (input is untrusted)."""
    if isinstance(value, str):
        return excerpt(value, limit)
    if isinstance(value, int | float | bool) or value is None:
        return repr(value)[:limit]
    return type(value).__name__
