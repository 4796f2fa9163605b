"""Layer specs and which module names a trace hooks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optinspect.engine.selection import parse_layers, select_modules
from optinspect.errors import UsageError
from optinspect.model.names import layer_of


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", [0]),
        ("0,5", [0, 5]),
        ("3-7", [3, 4, 5, 6, 7]),
        ("-1", [11]),
        ("-12", [0]),
        ("all", list(range(12))),
        (" 5 , 0-1 ", [0, 1, 5]),
        ("2-2", [2]),
    ],
)
def test_valid_specs(spec: str, expected: list[int]) -> None:
    assert parse_layers(spec, 12) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3-", "cannot read layer spec '3-': use N, N-M, N,M, -1 or all"),
        ("a", "cannot read layer spec 'a': use N, N-M, N,M, -1 or all"),
        ("", "cannot read layer spec '': use N, N-M, N,M, -1 or all"),
        ("1-0", "layer range 1-0 is empty: write it as low-high"),
        ("12", "layer 12 does not exist: the model has layers 0-11"),
        ("-13", "layer -13 does not exist: the model has layers 0-11"),
        ("10-12", "layer 12 does not exist: the model has layers 0-11"),
    ],
)
def test_invalid_specs(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_layers(spec, 12)
    assert str(info.value) == message
    assert info.value.exit_code == 2


def test_layer_of() -> None:
    assert layer_of("model.decoder.layers.3") == 3
    assert layer_of("model.decoder.layers.10.fc1") == 10
    assert layer_of("model.decoder.layers") is None
    assert layer_of("lm_head") is None


NAMES = [
    "",
    "model",
    "model.decoder",
    "model.decoder.embed_tokens",
    "model.decoder.embed_positions",
    "model.decoder.layers",
    "model.decoder.layers.0",
    "model.decoder.layers.0.fc1",
    "model.decoder.layers.1",
    "model.decoder.layers.1.fc1",
    "model.decoder.final_layer_norm",
    "lm_head",
]


def test_overview_selection() -> None:
    assert select_modules(NAMES, None) == [
        "model.decoder.embed_tokens",
        "model.decoder.embed_positions",
        "model.decoder.layers.0",
        "model.decoder.layers.1",
        "model.decoder.final_layer_norm",
        "lm_head",
    ]


def test_layer_selection_takes_the_layer_and_everything_inside() -> None:
    assert select_modules(NAMES, [1]) == ["model.decoder.layers.1", "model.decoder.layers.1.fc1"]


_NUMBER = "(-?[0-9]+)"
_GRAMMAR = re.compile(rf"^\s*(all|{_NUMBER}(-[0-9]+)?(\s*,\s*{_NUMBER}(-[0-9]+)?)*)\s*$", re.I)


def reference_layers(spec: str, n: int) -> list[int] | None:
    """What the grammar says a spec means, or None when it must be refused."""
    if not _GRAMMAR.match(spec) or not spec.strip():
        return None
    if spec.strip().lower() == "all":
        return list(range(n))
    chosen: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        if re.fullmatch("-?[0-9]+", item):
            i = int(item)
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                return None
            chosen.add(i)
        else:
            lo, hi = (int(v) for v in re.fullmatch("(-?[0-9]+)-([0-9]+)", item).groups())
            if lo < 0 or hi < lo or hi >= n:
                return None
            chosen.update(range(lo, hi + 1))
    return sorted(chosen)


spec_text = st.one_of(
    st.text(alphabet="0123456789-, al٣", max_size=12),
    st.from_regex(r"\A-?[0-9]{1,2}(-[0-9]{1,2})?(,-?[0-9]{1,2}(-[0-9]{1,2})?){0,3}\Z"),
    st.text(max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(spec=spec_text, n=st.integers(min_value=1, max_value=40))
def test_parser_accepts_exactly_its_grammar(spec: str, n: int) -> None:
    expected = reference_layers(spec, n)
    if expected is None:
        with pytest.raises(UsageError):
            parse_layers(spec, n)
    else:
        assert parse_layers(spec, n) == expected
