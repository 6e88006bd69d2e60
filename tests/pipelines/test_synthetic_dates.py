import datetime
import re
from collections import Counter

import pytest

from pipelines import synthetic, text

MONTHS = [datetime.date(2001, m, 1).strftime("%B").lower() for m in range(1, 13)]
WEEKDAYS = [datetime.date(2001, 1, d).strftime("%A").lower() for d in range(1, 8)]  # monday first
MONTH = "(?P<month>" + "|".join(MONTHS) + ")"
MON = "(?P<month>" + "|".join(m[:3] for m in MONTHS) + ")"
WEEKDAY = "(?P<weekday>" + "|".join(WEEKDAYS) + ")"
WKD = "(?P<weekday>" + "|".join(w[:3] for w in WEEKDAYS) + ")"
DAY, ORDINAL, YEAR = (
    r"(?P<day>\d{1,2})",
    r"(?P<day>\d{1,2})(?P<suffix>st|nd|rd|th)",
    r"(?P<year>\d{4})",
)
# An independent reading of every format: a pattern per format name.
PATTERNS = {
    "day_month_year": f"{DAY} {MONTH} {YEAR}",
    "the_ordinal_of_month": f"the {ORDINAL} of {MONTH} {YEAR}",
    "month_day_year": f"{MONTH} {DAY}, {YEAR}",
    "month_ordinal_year": f"{MONTH} {ORDINAL}, {YEAR}",
    "ordinal_month_year": f"{ORDINAL} {MONTH} {YEAR}",
    "weekday_day_month_year": f"{WEEKDAY}, {DAY} {MONTH} {YEAR}",
    "weekday_month_ordinal_year": f"{WEEKDAY} {MONTH} {ORDINAL} {YEAR}",
    "short_weekday_day_month_year": f"{WKD} {DAY} {MON} {YEAR}",
    "day_short_month_year": f"{DAY} {MON} {YEAR}",  # "3 may 2021" reads as day_month_year
    "us_numeric": r"(?P<mm>\d\d)/(?P<day>\d\d)/" + YEAR,
    "european_numeric": r"(?P<day>\d\d)\.(?P<mm>\d\d)\." + YEAR,
}


def _parse(source):
    """(format name, date) read back from a source; raises if no format matches."""
    for name, pattern in PATTERNS.items():
        match = re.fullmatch(pattern, source)
        if not match:
            continue
        fields = match.groupdict()
        if "mm" in fields:
            month = int(fields["mm"])
        else:
            month = [m[:3] for m in MONTHS].index(fields["month"][:3]) + 1
        date = datetime.date(int(fields["year"]), month, int(fields["day"]))
        if fields.get("suffix"):
            day = date.day
            expected = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
            assert fields["suffix"] == expected, source
        if fields.get("weekday"):
            assert WEEKDAYS[date.weekday()].startswith(fields["weekday"]), source  # the true one
        return name, date
    raise AssertionError(f"no format reads {source!r}")


def test_sources_read_back_to_their_iso_targets():
    pairs = synthetic.dates(3000, seed=0)
    names, dates = Counter(), []
    for source, target in pairs:
        name, date = _parse(source)
        assert date.isoformat() == target and source == source.lower()
        names[name] += 1
        dates.append(date)
    # Every format is drawn (about 3000 / 11 = 273 each), the whole calendar is covered.
    assert set(names) == set(synthetic.DATE_FORMATS) and min(names.values()) > 200
    assert min(d.year for d in dates) == 1950 and max(d.year for d in dates) == 2049
    assert {d.month for d in dates} == set(range(1, 13)) and {d.day for d in dates} == set(
        range(1, 32)
    )


def test_formats_and_years_arguments():
    for name in synthetic.DATE_FORMATS:
        for source, target in synthetic.dates(
            30, seed=1, min_year=2000, max_year=2001, formats=[name]
        ):
            parsed_name, date = _parse(source)
            assert parsed_name == name or {parsed_name, name} == {
                "day_month_year",
                "day_short_month_year",  # "3 may 2021" reads both ways
            }
            assert date.isoformat() == target and date.year in (2000, 2001)
    # Leap days exist and are valid; the US format puts the month first.
    assert ("02/29/2000", "2000-02-29") in synthetic.dates(
        2000, seed=2, min_year=2000, max_year=2000, formats=["us_numeric"]
    )


def test_deterministic_per_seed_and_prefix_stable():
    assert synthetic.dates(200, seed=4) == synthetic.dates(200, seed=4)
    assert synthetic.dates(200, seed=4) != synthetic.dates(200, seed=5)
    assert synthetic.dates(500, seed=4)[:200] == synthetic.dates(200, seed=4)
    assert synthetic.dates(0) == []


def test_month_is_a_token_of_its_own(tmp_path):
    pairs = synthetic.dates(600, seed=6)
    all_words = text.split_words([s for s, _ in pairs]).to_list()
    for (source, _), words in zip(pairs, all_words, strict=True):
        words = [w.decode() for w in words]
        name, date = _parse(source)
        month_word = MONTHS[date.month - 1]
        if name in ("us_numeric", "european_numeric"):
            assert f"{date.month:02d}" in words
        else:
            assert month_word in words or month_word[:3] in words
    # With a vocabulary learned from the generated data, each month name is one token.
    text.build_wordpiece_vocab([s for pair in pairs for s in pair], tmp_path / "v.txt", 400)
    tokenizer = text.load_tokenizer(tmp_path / "v.txt")
    sources = [s for s, _ in pairs[:100]]
    for source, ids in zip(sources, tokenizer.tokenize(sources).to_list(), strict=True):
        month = next((m for m in MONTHS if re.search(rf"\b{m}\b", source)), None)
        if month:
            assert tokenizer.token_to_id(month) in ids, source


def test_argument_errors():
    with pytest.raises(ValueError, match=r"Received: num_examples=-1"):
        synthetic.dates(-1)
    with pytest.raises(ValueError, match=r"Received: min_year=2030, max_year=2020"):
        synthetic.dates(5, min_year=2030, max_year=2020)
    with pytest.raises(ValueError, match=r"Received: formats=\['iso'\]"):
        synthetic.dates(5, formats=["iso"])
    with pytest.raises(ValueError, match=r"Received: formats=\[\]"):
        synthetic.dates(5, formats=[])
