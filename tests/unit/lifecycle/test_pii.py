"""lifecycle.pii: what is personal data, what is not, and how it is redacted."""

import csv
import re
from pathlib import Path

import pytest

from lifecycle.pii import CARD_NUMBER, EMAIL, KINDS, PHONE, PiiMatch, find_pii, iban_ok, luhn_ok, redact

REPO = Path(__file__).resolve().parents[3]

FOUND = [
    # (text, [(kind, matched text), ...])
    ("write to jane.doe@example.co.uk today", [("email", "jane.doe@example.co.uk")]),
    ("call me on +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
    ("my number is (555) 123-4567", [("phone", "(555) 123-4567")]),
    ("card 4111 1111 1111 1111 lost", [("card_number", "4111 1111 1111 1111")]),
    ("amex 3782-822463-10005 please", [("card_number", "3782-822463-10005")]),
    ("card 5555555555554444", [("card_number", "5555555555554444")]),
    ("ssn 078-05-1120 on file", [("ssn", "078-05-1120")]),
    ("ssn 219 09 9999", [("ssn", "219 09 9999")]),
    ("NI AB123456C", [("uk_nino", "AB123456C")]),
    ("NI number: JG 10 37 52 D.", [("uk_nino", "JG 10 37 52 D")]),
    ("pay GB82 WEST 1234 5698 7654 32 now", [("iban", "GB82 WEST 1234 5698 7654 32")]),
    ("pay GB82WEST12345698765432", [("iban", "GB82WEST12345698765432")]),
    ("to DE89 3704 0044 0532 0130 00 CASH", [("iban", "DE89 3704 0044 0532 0130 00")]),
    ("IBAN NO9386011117947.", [("iban", "NO9386011117947")]),
    ("FR14 2004 1010 0505 0001 3M02 606 TODAY", [("iban", "FR14 2004 1010 0505 0001 3M02 606")]),
    ("schreib an jürgen@bücher.de", [("email", "jürgen@bücher.de")]),
    ("ü@ex.com", [("email", "ü@ex.com")]),
    ("call 0044 20 7946 0958 after 2024-03-12 10:30", [("phone", "0044 20 7946 0958")]),
    ("a@b.io and 4111111111111111 and 078-05-1120",
     [("email", "a@b.io"), ("card_number", "4111111111111111"), ("ssn", "078-05-1120")]),
]

NOT_FOUND = [
    "I was charged £200,000 on 12/03/2024",
    "my top up of 20.00 failed",
    "card ending 1234",
    "card ending in 1234 was charged 3 times",
    "on 12/03/2019 at 10:30 I paid €1,250.50",
    "ref 12345678 is pending",
    "transfer of 1,000,000.00 EUR on 2024-03-12",
    "order 4111 1111 1111 1112",  # Luhn fails, 16 digits is no phone
    "tracking 1234567890123456",  # idem
    "I need to pay my ABCD1234 bill",
    "user@localhost has no domain",
    "paid 2024-03-12 10:30, again 2024-03-13 09:15:02",  # an ISO date and time is not a phone number
    "the app at 192.168.100.200 timed out",  # nor a dotted IPv4 address
    "user@host.123 has no top-level name",
]

# Not of this kind, though shaped like it (as nine or more digits some are still phone numbers).
NOT_OF_KIND = [
    ("ssn", "000-12-3456"), ("ssn", "666-12-3456"), ("ssn", "900-12-3456"), ("ssn", "123-00-4567"),
    ("ssn", "123-45-0000"), ("ssn", "123-45 6789"), ("ssn", "123-45-67890"),
    ("uk_nino", "QQ123456C"), ("uk_nino", "DA123456A"), ("uk_nino", "AD123456A"), ("uk_nino", "AO123456A"),
    ("uk_nino", "BG123456A"), ("uk_nino", "GB123456A"), ("uk_nino", "ZZ123456A"), ("uk_nino", "AB123456E"),
    ("uk_nino", "paid at 200000 a month"),  # capitals only: lower case is never an NI number
    ("iban", "GB82 WEST 1234 5698 7654 33"),  # mod-97 fails
    ("iban", "gb82west12345698765432"),  # lower-case IBANs: deliberately out of scope
    ("card_number", "4111 1111 1111 1112"), ("card_number", "1234 5678 9012"),  # Luhn fails; 12 digits
]


@pytest.mark.parametrize(("text", "expected"), FOUND)
def test_finds_personal_data(text, expected):
    found = find_pii(text)
    assert [(m.kind, m.text) for m in found] == expected
    assert all(text[m.start:m.end] == m.text for m in found)


@pytest.mark.parametrize("text", NOT_FOUND)
def test_banking_like_text_is_not_personal_data(text):
    assert find_pii(text) == []


@pytest.mark.parametrize(("kind", "text"), NOT_OF_KIND)
def test_invalid_ids_are_not_of_their_kind(kind, text):
    assert find_pii(text, kinds=[kind]) == []


def test_no_banking77_query_is_flagged():
    # The whole corpus (13,083 queries) is ~0.3 s; a false positive here would redact real customer questions.
    flagged = []
    for split in ("train", "test"):
        with (REPO / "data/banking77" / f"{split}.csv").open(newline="") as fh:
            flagged += [row["text"] for row in csv.DictReader(fh) if find_pii(row["text"])]
    assert flagged == []


def test_overlap_goes_to_the_more_specific_kind():
    # An SSN is nine digits (a phone), IBAN digits form a 13-19 digit run (a card): each reported once.
    assert [m.kind for m in find_pii("078-05-1120")] == ["ssn"]
    assert [m.kind for m in find_pii("GB82 WEST 1234 5698 7654 32")] == ["iban"]


def test_kinds_limit_the_search():
    text = "a@b.io 078-05-1120"
    assert [m.kind for m in find_pii(text, kinds=["ssn"])] == ["ssn"]
    # Without the SSN detector, the same digits are a phone number.
    assert [m.kind for m in find_pii(text, kinds=["phone"])] == ["phone"]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        find_pii(text, kinds=["passport"])


def test_training_rule_regexes_stay_regex_only():
    # The GX rule has no checksum: a Luhn-failing 16-digit run is still refused in training data.
    assert re.search(CARD_NUMBER, "order 4111 1111 1111 1112")
    assert re.search(PHONE, "(555) 123-4567") and re.search(EMAIL, "a@b.io")
    assert not re.search(PHONE, "4111 1111 1111 1111")


@pytest.mark.parametrize(("digits", "ok"), [("4111111111111111", True), ("4111111111111112", False),
                                            ("79927398713", True), ("79927398710", False), ("", False)])
def test_luhn(digits, ok):
    assert luhn_ok(digits) is ok


@pytest.mark.parametrize(("iban", "ok"), [("GB82 WEST 1234 5698 7654 32", True), ("DE89370400440532013000", True),
                                          ("GB82 WEST 1234 5698 7654 23", False), ("GB82", False),
                                          ("GB82-WEST-1234-5698", False)])
def test_iban_mod97(iban, ok):
    assert iban_ok(iban) is ok


@pytest.mark.parametrize(("text", "redacted"), [
    ("mail a@b.io now", "mail [REDACTED:email] now"),
    ("a@b.io", "[REDACTED:email]"),
    ("ssn 078-05-1120, card 4111111111111111.", "ssn [REDACTED:ssn], card [REDACTED:card_number]."),
    ("nothing here", "nothing here"),
])
def test_redact(text, redacted):
    assert redact(text, find_pii(text)) == redacted


def test_redact_refuses_foreign_or_overlapping_matches():
    with pytest.raises(ValueError, match="not in this text"):
        redact("other text", find_pii("mail a@b.io now"))
    a = PiiMatch(kind="phone", start=0, end=5, text="12345")
    b = PiiMatch(kind="ssn", start=3, end=7, text="4567")
    with pytest.raises(ValueError, match="overlap"):
        redact("1234567", [a, b])


def test_kinds_are_the_documented_set():
    assert set(KINDS) == {"email", "iban", "card_number", "ssn", "uk_nino", "phone"}
