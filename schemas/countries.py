"""Countries in the contract: ISO 3166-1 alpha-2 codes, from what upstream systems write.

A profile's `country` may be any of what pycountry (ISO 3166-1, English) knows for a country,
in any case: its alpha-2 code (`us`), its alpha-3 code (`USA`), its name (`United States`), its
official name (`United States of America`) or its common name (`South Korea`). Each lookup is
exact; nothing is guessed (no fuzzy matching, no translations: `Deutschland` is refused).
The one addition is `UK` for GB: not GB's code, but what everybody writes, and ISO 3166-1
reserves it for the United Kingdom, so it can never name another country.

The names accepted are pycountry's, which follow ISO's renames (`Turkey` became `Türkiye`):
the same pycountry always gives the same answer, but upgrading it can change which names are
accepted, so its range in pyproject.toml is narrow and an upgrade is a change of the contract.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Annotated, Final

import pycountry
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

ISO_RESERVED_ALIASES: Final[dict[str, str]] = {"UK": "GB"}
"""Codes ISO 3166-1 exceptionally reserves for a country that has another code."""

_SHOWN_CHARACTERS: Final = 64


def country_code(text: str) -> str | None:
    """The upper-case ISO 3166-1 alpha-2 code `text` names, or None when it names no country.

    Case and surrounding spaces do not matter; the rest must match exactly."""
    # NFC: the same name may arrive decomposed (`Tu\u0308rkiye`), as some systems store it.
    return _country_code(unicodedata.normalize("NFC", text.strip()).lower())


@functools.lru_cache(maxsize=1024)
def _country_code(key: str) -> str | None:
    # Every profile event looks its country up, mostly the same few: cached by the lower-case
    # text, as pycountry indexes it.
    alias = ISO_RESERVED_ALIASES.get(key.upper())
    if alias is not None:
        return alias
    countries = pycountry.countries
    country = (
        countries.get(alpha_2=key)
        or countries.get(alpha_3=key)
        or countries.get(name=key)
        or countries.get(official_name=key)
        or countries.get(common_name=key)
    )
    return None if country is None else country.alpha_2


def _normalised(text: str) -> str:
    code = country_code(text)
    if code is None:
        shown = text if len(text) <= _SHOWN_CHARACTERS else text[:_SHOWN_CHARACTERS] + "..."
        raise PydanticCustomError(
            "country_unknown",
            "unknown country {country}: expected an ISO 3166-1 alpha-2 code (e.g. US), an "
            "alpha-3 code or a country's English name",
            {"country": repr(shown)},
        )
    return code


COUNTRY_DESCRIPTION: Final = (
    "The country: an ISO 3166-1 alpha-2 code, or its alpha-3 code, English name, official name "
    "or common name as ISO 3166-1 (pycountry) spells them, in any case, or UK for GB. Stored "
    "as the upper-case alpha-2 code; anything else makes the event invalid."
)
COUNTRY_EXAMPLES: Final = ["US", "usa", "United States", "GB", "UK"]

CountryCode = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_normalised)]
"""A country, normalised to its upper-case ISO 3166-1 alpha-2 code."""
