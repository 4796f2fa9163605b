"""Layer specs and which module names a trace hooks."""

from __future__ import annotations

import pytest

from optinspect.errors import UsageError
from optinspect.selection import layer_of, parse_layers, select_modules


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
