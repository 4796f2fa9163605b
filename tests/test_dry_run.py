"""``trace --dry-run``: the meta-device pass gives the real run's shapes and no statistics."""

from __future__ import annotations

import json

import pytest

from conftest import assert_error, json_of


def run_json(cli, *args: str) -> dict:
    return json_of(cli, "trace", *args, "--model", "tiny")


@pytest.mark.parametrize("layer", [None, "all"])
def test_dry_run_shapes_equal_the_real_trace(cli, layer: str | None) -> None:
    layer_args = ["--layer", layer] if layer else []
    real = run_json(cli, "The quick brown fox", *layer_args)
    dry = run_json(cli, "The quick brown fox", *layer_args, "--dry-run")
    assert dry["dry_run"] is True and dry["device"] == "meta"
    assert dry["tokens"] == real["tokens"]
    assert [(m["name"], m["shape"], m["dtype"]) for m in dry["modules"]] == [
        (m["name"], m["shape"], m["dtype"]) for m in real["modules"]
    ]
    assert all(m["stats"] is None for m in dry["modules"])


def test_dry_run_with_a_token_count(cli) -> None:
    doc = run_json(cli, "--dry-run", "--tokens", "7", "--layer", "0")
    assert doc["text"] is None and doc["tokens"] == []
    assert doc["modules"][0]["shape"] == [1, 7, 64]


def test_dry_run_too_many_tokens(cli) -> None:
    result = cli("trace", "--dry-run", "--tokens", "500", "--model", "tiny")
    assert (result.code, result.err) == (
        2,
        "Error: the text has 500 tokens; tiny accepts at most 128\n",
    )


def test_dry_run_refuses_save(cli, tmp_path) -> None:
    result = cli("trace", "x", "--model", "tiny", "--dry-run", "--save", str(tmp_path / "a"))
    assert result.code == 2
    assert result.err == (
        "Error: --dry-run computes no values: it cannot --save, --plot or --fail-on-nonfinite\n"
    )


def test_dry_run_table_has_no_statistics_columns(cli) -> None:
    result = cli("trace", "Hi", "--model", "tiny", "--dry-run", "--layer", "0")
    assert result.code == 0, result.err
    assert "dry run: meta device, no weights, no statistics" in result.out
    assert "absmax" not in result.out
    # The layer's modules are shown as a tree under the layer itself.
    assert "model.decoder.layers.0 " in result.out and "│   fc1 " in result.out


def test_dry_run_of_the_largest_family_member(cli) -> None:
    # Stops after layer 0: the other 95 layers cannot change its shapes.
    result = cli(
        "trace", "--model", "facebook/opt-175b", "--dry-run", "--tokens", "4", "--layer", "0",
        "-f", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    shapes = {m["name"].removeprefix("model.decoder.layers.0"): m["shape"] for m in doc["modules"]}
    assert shapes[""] == [1, 4, 12288]
    assert shapes[".fc1"] == [4, 49152]
    assert len(doc["modules"]) == 11


@pytest.fixture
def layer_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Forward calls of every decoder layer and of lm_head in the dry run's meta model."""
    import optinspect.analyses.dryrun as dryrun

    calls: dict[str, int] = {}
    build = dryrun.build_meta_model

    def spied(*args, **kwargs):
        model = build(*args, **kwargs)
        for name, module in model.named_modules():
            if name == "lm_head" or name.removeprefix("model.decoder.layers.").isdigit():
                calls[name] = 0
                module.register_forward_pre_hook(
                    lambda *a, name=name: calls.__setitem__(name, calls[name] + 1)
                )
        return model

    monkeypatch.setattr(dryrun, "build_meta_model", spied)
    return calls


def test_dry_run_stops_after_the_last_selected_module(layer_calls: dict[str, int]) -> None:
    from optinspect.analyses.dryrun import dry_run

    result = dry_run("tiny", None, tokens=5, quant="none", layers="1")
    # Layer 1 is the last selected: layers 2 and 3 and the head never run.
    assert layer_calls == {
        "model.decoder.layers.0": 1,
        "model.decoder.layers.1": 1,
        "model.decoder.layers.2": 0,
        "model.decoder.layers.3": 0,
        "lm_head": 0,
    }
    # ... and the result still has every selected module (tiny is pre-LayerNorm), in
    # execution order: the stop comes after the layer's own output, its last module.
    names = [m.name.removeprefix("model.decoder.layers.1") for m in result.modules]
    assert names == [
        "", ".self_attn_layer_norm", ".self_attn", ".self_attn.q_proj", ".self_attn.k_proj",
        ".self_attn.v_proj", ".self_attn.out_proj", ".final_layer_norm", ".fc1",
        ".activation_fn", ".fc2",
    ]  # fmt: skip
    assert result.modules[0].shape == (1, 5, 64)


def test_dry_run_of_the_overview_runs_to_the_head(layer_calls: dict[str, int]) -> None:
    from optinspect.analyses.dryrun import dry_run

    result = dry_run("tiny", None, tokens=3, quant="none")
    assert set(layer_calls.values()) == {1}
    assert result.modules[-1].name == "lm_head" and result.modules[-1].shape == (1, 3, 512)


@pytest.mark.parametrize("option", [["--device-map", "auto"], ["--max-memory", "cpu=1GB"]])
def test_dry_run_refuses_placement_it_would_ignore(cli, no_load, option: list[str]) -> None:
    result = cli("trace", "x", "--model", "tiny", "--dry-run", *option)
    assert_error(
        result,
        2,
        "--dry-run builds the model on the meta device: it takes no --device-map, "
        "--max-memory or --offload-dir",
    )


def test_dry_run_tokens_carry_their_bytes(cli) -> None:
    result = cli("trace", "a — b", "--model", "tiny", "--dry-run", "-f", "json")
    assert result.code == 0, result.err
    pieces = [t.get("bytes") for t in json.loads(result.out)["tokens"] if "bytes" in t]
    assert pieces == ["e2", "80", "94"]  # the three bytes of "—", one token each
