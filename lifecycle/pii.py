"""Personal data in text: e-mail addresses, phone numbers, payment cards and government ids.

Two users share these patterns. The training-data contract (``data_checks.validation``) feeds the raw
regex strings :data:`EMAIL`, :data:`PHONE` and :data:`CARD_NUMBER` to Great Expectations, which can only
match a regex. The serving guardrails call :func:`find_pii`, which adds checksums where the format has
one, so an order number or a random 16-digit figure in a model's answer is not taken for a card.

=============  ==========================================================================================
kind           what :func:`find_pii` reports
=============  ==========================================================================================
email          ``local@domain.tld``
iban           2 capital letters, 2 check digits, 11-30 capitals/digits (spaces between groups of four
               allowed), and the ISO 13616 mod-97 check gives 1. Lower-case IBANs are not matched: with
               letters allowed, ordinary words would reach the checksum.
card_number    13-19 digits (single spaces or dashes between) that pass the Luhn check
ssn            US Social Security number ``ddd-dd-dddd`` (or with spaces); never issued: area 000, 666 and
               900-999, group 00, serial 0000
uk_nino        UK National Insurance number ``AB123456C`` (or ``AB 12 34 56 C``): first letter not D F I
               Q U V, second not D F I O Q U V, prefixes BG GB KN NK NT TN ZZ never allocated, suffix A-D.
               Capitals only: "at 200000 a month" must not be an id.
phone          9-15 digits, optional ``+`` or parentheses (the same pattern as the training-data rule)
=============  ==========================================================================================

Where spans overlap, the kind higher in this table wins (an SSN is also nine digits, so a "phone"; the
digits of an IBAN are also a "card"): each character is reported at most once.

Amounts, dates and short references of BANKING77-like text are not personal data:

>>> find_pii("I was charged £200,000 on 12/03/2024, card ending 1234; my top up of 20.00 failed")
[]
>>> [m.kind for m in find_pii("mail jo@bank.com, card 4111 1111 1111 1111, ssn 078-05-1120")]
['email', 'card_number', 'ssn']
>>> find_pii("order 4111 1111 1111 1112")  # fails Luhn, and 16 digits are too many for a phone
[]
>>> redact("IBAN GB82 WEST 1234 5698 7654 32 please", find_pii("IBAN GB82 WEST 1234 5698 7654 32 please"))
'IBAN [REDACTED:iban] please'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from lifecycle.records import Frozen

# --- Regex strings shared with the Great Expectations training-data rules (regex only, no checksum) ---
# Letters of any script in the local part and the domain (jürgen@bücher.de is an address too).
EMAIL = r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}"
# 13-19 digits, single spaces or dashes allowed between them (4-4-4-4, 4-6-5, or one run).
CARD_NUMBER = r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"
# 9-15 digits with an optional +country code; spaces, dots, dashes and parentheses between digit groups
# ("+44 20 7946 0958", "(555) 123-4567"). Short figures such as "£200,000" or "20.00" never reach 9.
# The look-arounds keep it off slices of a longer digit run, so a spaced card number is not also a phone, and
# off what is shaped as something else: an ISO date (and time: "2024-03-12 10:30"), a dotted IPv4 address.
PHONE = (r"(?<![\w+])(?<!\d[ .-])(?!\d{4}-\d{2}-\d{2}(?!\d))(?!\d{1,3}(?:\.\d{1,3}){3}(?![.\d]))"
         r"(?:\+|\()?\d(?:(?:[ .-]|\) ?|[ .-]?\()?\d){8,14}(?![ .-]?\d)")

# --- Government ids and bank accounts, used by find_pii only ---
# One separator, used twice (the backreference), so "123-45 6789" is not read as an SSN.
SSN = r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ]?)(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])"
UK_NINO = (r"(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
           r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])")
# Printed IBANs come in groups of four; the shortest (Norway) has 15 characters, the longest 34.
IBAN = r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"

PiiKind = Literal["email", "iban", "card_number", "ssn", "uk_nino", "phone"]
# Overlap priority, most specific first: a checksum-validated span beats a bare digit pattern.
KINDS: tuple[PiiKind, ...] = ("email", "iban", "card_number", "ssn", "uk_nino", "phone")


class PiiMatch(Frozen):
    """One span of personal data: ``text == source[start:end]``."""

    kind: PiiKind
    start: int
    end: int
    text: str


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of payment card numbers; separators are ignored.

    >>> luhn_ok("4111 1111 1111 1111"), luhn_ok("4111 1111 1111 1112")
    (True, False)
    """
    numbers = [int(c) for c in digits if c.isdigit()]
    total = 0
    for i, n in enumerate(reversed(numbers)):
        if i % 2:  # every second digit from the right is doubled, 10-18 folded to 1-9
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return bool(numbers) and total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 is 1.

    >>> iban_ok("GB82 WEST 1234 5698 7654 32"), iban_ok("GB82 WEST 1234 5698 7654 33")
    (True, False)
    """
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_span(match: re.Match[str]) -> tuple[int, int] | None:
    """The longest prefix of the match, cut at a space, that passes mod-97.

    Why: the regex may run on into a following capitalised word ("... 7654 32 CASH"), which a printed
    IBAN's groups of four cannot tell apart from one more group.
    """
    text, start = match.group(), match.start()
    while True:
        if iban_ok(text):
            return start, start + len(text)
        cut = text.rfind(" ")
        if cut < 0:
            return None
        text = text[:cut]


def _plain(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span()


def _luhn_span(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span() if luhn_ok(match.group()) else None


_DETECTORS: dict[PiiKind, tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[int, int] | None]]] = {
    "email": (re.compile(EMAIL), _plain),
    "iban": (re.compile(IBAN), _iban_span),
    "card_number": (re.compile(CARD_NUMBER), _luhn_span),
    "ssn": (re.compile(SSN), _plain),
    "uk_nino": (re.compile(UK_NINO), _plain),
    "phone": (re.compile(PHONE), _plain),
}


def find_pii(text: str, kinds: Iterable[PiiKind] | None = None) -> list[PiiMatch]:
    """Every span of personal data in ``text``, in order, none overlapping (see the module table).

    ``kinds`` limits the search (default: all of :data:`KINDS`).

    >>> find_pii("call +44 20 7946 0958 or write to a@b.io")  # doctest: +NORMALIZE_WHITESPACE
    [PiiMatch(kind='phone', start=5, end=21, text='+44 20 7946 0958'),
     PiiMatch(kind='email', start=34, end=40, text='a@b.io')]
    >>> find_pii("NI number AB 12 34 56 C, not QQ123456C", kinds=["uk_nino"])
    [PiiMatch(kind='uk_nino', start=10, end=23, text='AB 12 34 56 C')]
    """
    wanted = set(KINDS if kinds is None else kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    taken: list[PiiMatch] = []
    for kind in KINDS:  # priority order: an earlier kind keeps a contested span
        if kind not in wanted:
            continue
        pattern, accept = _DETECTORS[kind]
        for match in pattern.finditer(text):
            span = accept(match)
            if span is None or any(span[0] < m.end and m.start < span[1] for m in taken):
                continue
            taken.append(PiiMatch(kind=kind, start=span[0], end=span[1], text=text[span[0]:span[1]]))
    return sorted(taken, key=lambda m: m.start)


def redact_pii(text: str) -> str:
    """``text`` with every span :func:`find_pii` finds redacted.

    >>> redact_pii("card 4111 1111 1111 1111 lost")
    'card [REDACTED:card_number] lost'
    """
    return redact(text, find_pii(text))


def redact(text: str, matches: Sequence[PiiMatch]) -> str:
    """``text`` with each matched span replaced by ``[REDACTED:<kind>]``.

    The matches must come from this very text (each ``match.text`` is checked against its span) and must
    not overlap; :func:`find_pii` guarantees both.

    >>> redact("mail a@b.io now", find_pii("mail a@b.io now"))
    'mail [REDACTED:email] now'
    """
    ordered = sorted(matches, key=lambda m: m.start)
    parts, cursor = [], 0
    for m in ordered:
        if text[m.start:m.end] != m.text:
            raise ValueError(f"match {m.text!r} at {m.start}:{m.end} is not in this text; redact the text "
                             "the matches were found in")
        if m.start < cursor:
            raise ValueError(f"matches overlap at {m.start}: redact non-overlapping spans (as find_pii returns)")
        parts += [text[cursor:m.start], f"[REDACTED:{m.kind}]"]
        cursor = m.end
    parts.append(text[cursor:])
    return "".join(parts)
