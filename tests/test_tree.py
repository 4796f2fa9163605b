"""optinspect tree: the module hierarchy on the meta device, with counts that add up."""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import UNUSUAL_CONFIGS, fresh_run, json_of, small_config
from optinspect.analyses.tree import TreeNode, build_tree
from optinspect.model.family import FAMILY


def tree_json(cli, *args: str) -> dict:
    return json_of(cli, "tree", *args)


def params_total(cli, model: str) -> int:
    result = cli("params", "--model", model, "--format", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)["total"]


def children_of(modules: list[dict], index: int) -> list[dict]:
    """The direct children of modules[index] in a flat, parents-first list."""
    depth = modules[index]["depth"]
    found = []
    for module in modules[index + 1 :]:
        if module["depth"] <= depth:
            break
        if module["depth"] == depth + 1:
            found.append(module)
    return found


@pytest.mark.parametrize("collapse", ["--collapse", "--no-collapse"])
@pytest.mark.parametrize("model", ["tiny", "facebook/opt-350m"])
def test_subtree_counts_add_up(cli, model: str, collapse: str) -> None:
    doc = tree_json(cli, "--model", model, collapse)
    modules = doc["modules"]
    assert doc["schema"] == 1
    assert modules[0]["name"] == "" and modules[0]["depth"] == 0
    assert doc["total"] == modules[0]["params"] == params_total(cli, model)
    for index, module in enumerate(modules):
        kids = children_of(modules, index)
        assert module["params"] == module["own_params"] + sum(
            kid["params"] * kid["repeat"] for kid in kids
        ), module["name"]


def test_identical_layers_are_collapsed(cli) -> None:
    modules = tree_json(cli, "--model", "tiny")["modules"]
    by_name = {module["name"]: module for module in modules}
    layers = by_name["model.decoder.layers.0-3"]
    assert (layers["type"], layers["repeat"], layers["depth"]) == ("OPTDecoderLayer", 4, 4)
    assert by_name["model.decoder.layers.0-3.fc1"]["weight_shape"] == [256, 64]
    assert "model.decoder.layers.1" not in by_name

    expanded = tree_json(cli, "--model", "tiny", "--no-collapse")["modules"]
    names = {module["name"] for module in expanded}
    assert {f"model.decoder.layers.{i}.fc2" for i in range(4)} <= names
    assert all(module["repeat"] == 1 for module in expanded)


def test_tied_head_counts_nothing_and_says_so(cli) -> None:
    modules = tree_json(cli, "--model", "tiny")["modules"]
    head = next(module for module in modules if module["name"] == "lm_head")
    assert head["params"] == 0
    assert head["tied_to"] == "model.decoder.embed_tokens.weight"
    assert head["weight_shape"] == [512, 64]


@pytest.mark.parametrize("depth", [0, 1, 3, 5])
def test_depth_limits_the_nodes(cli, depth: int) -> None:
    full = tree_json(cli, "--model", "tiny")["modules"]
    doc = tree_json(cli, "--model", "tiny", "--depth", str(depth))
    assert doc["max_depth"] == depth
    assert max(module["depth"] for module in doc["modules"]) == depth
    assert doc["modules"] == [module for module in full if module["depth"] <= depth]


def test_depth_limits_the_table(cli) -> None:
    result = cli("tree", "--model", "facebook/opt-350m", "--depth", "4")
    assert result.code == 0, result.err
    assert "model.decoder.layers.0-23  24 x OPTDecoderLayer  302,309,376 params" in result.out
    assert "fc1" not in result.out
    deeper = cli("tree", "--model", "facebook/opt-350m")
    assert "model.decoder.layers.0-23.fc1  Linear  4,198,400 params  weight [4096, 1024]" in (
        deeper.out
    )


def test_negative_depth_is_a_usage_error(cli) -> None:
    result = cli("tree", "--model", "tiny", "--depth", "-1")
    assert (result.code, result.err) == (2, "Error: --depth must be 0 or more, not -1\n")


def test_csv_parses_with_a_header(cli) -> None:
    result = cli("tree", "--model", "tiny", "--format", "csv", "--depth", "3")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert list(rows[0]) == [
        "name",
        "type",
        "depth",
        "repeat",
        "params",
        "own_params",
        "weight_shape",
        "tied_to",
    ]
    assert rows[0]["type"] == "OPTForCausalLM"
    embed = next(row for row in rows if row["name"] == "model.decoder.embed_tokens")
    assert (embed["weight_shape"], embed["params"]) == ("512x64", "32768")


def test_opt_175b_offline(cli) -> None:
    doc = tree_json(cli, "--model", "facebook/opt-175b", "--depth", "4")
    assert doc["total"] == 174_604_468_224
    layers = next(m for m in doc["modules"] if m["name"] == "model.decoder.layers.0-95")
    assert layers["repeat"] == 96


def test_build_tree_counts_shared_tensors_once() -> None:
    from torch import nn

    first, second = nn.Linear(3, 3), nn.Linear(3, 3, bias=False)
    second.weight = first.weight
    root = build_tree(nn.Sequential(first, nn.ReLU(), second))
    assert isinstance(root, TreeNode)
    assert root.params == 12
    assert [child.params for child in root.children] == [12, 0, 0]
    assert root.children[2].tied_to == "0.weight"
    assert root.children[2].weight_shape == (3, 3)


@pytest.mark.parametrize("name", FAMILY)
def test_family_tree_in_plain_python_equals_the_meta_model(name: str) -> None:
    # tree answers for family members without importing torch; it must describe exactly
    # the model transformers builds, node for node, collapsed and not.
    from transformers import OPTConfig

    from optinspect.analyses.tree import family_tree
    from optinspect.model.family import family_config
    from optinspect.model.spec import build_meta_model

    raw = family_config(name)
    meta = build_meta_model(OPTConfig.from_dict(raw))
    for collapse in (True, False):
        plain = [node.as_dict() for node in family_tree(raw, collapse=collapse).walk()]
        built = [node.as_dict() for node in build_tree(meta, collapse=collapse).walk()]
        assert plain == built, (name, collapse)


def test_tree_of_a_family_member_imports_no_torch() -> None:
    fresh = fresh_run(["tree", "--model", "facebook/opt-175b", "-f", "json"])
    assert fresh.code == 0, fresh.err
    assert "torch" not in fresh.heavy


# --- the tree on a narrow terminal ---------------------------------------------------------

#: The characters of the tree's guides, before each label.
GUIDES = "│├└─ "


def tree_labels(text: str) -> list[str]:
    """Each node's label, its lines joined by the two spaces between values: a node's
    first line has a branch (or is the root's), its continuation lines have none."""
    labels: list[str] = []
    for number, line in enumerate(text.splitlines()[1:]):  # after the header line
        label = line.lstrip(GUIDES)
        if number == 0 or "── " in line:
            labels.append(label)
        else:
            labels[-1] += "  " + label
    return labels


@pytest.mark.parametrize("collapse", [True, False], ids=["collapsed", "whole"])
def test_tree_labels_break_only_between_values_at_80_to_120_columns(collapse: bool) -> None:
    # At 80 columns rich wrapped labels anywhere: `weight [512,` / `64]`, `2,048` /
    # `params`. Each label may take several lines, but only between two of its values.
    from rich.console import Console

    from optinspect.analyses.tree import tree_model
    from optinspect.render.tree import render_tree

    root = tree_model("facebook/opt-1.3b", collapse=collapse)

    def drawn(width: int) -> str:
        buffer = io.StringIO()
        render_tree(Console(file=buffer, width=width, color_system=None), "m", root)
        return buffer.getvalue()

    whole = tree_labels(drawn(1000))
    assert len(whole) == sum(1 for _ in root.walk())
    for width in range(80, 121):
        text = drawn(width)
        assert max(len(line) for line in text.splitlines()) <= width
        assert tree_labels(text) == whole, f"at {width} columns"


@pytest.mark.parametrize("overrides", UNUSUAL_CONFIGS)
def test_family_tree_of_unusual_configs_equals_the_meta_model(overrides: dict) -> None:
    """LayerNorms without parameters, projections, an untied head: still the same tree."""
    from optinspect.analyses.tree import family_tree

    raw, meta = small_config(overrides)
    for collapse in (True, False):
        plain = [node.as_dict() for node in family_tree(raw, collapse=collapse).walk()]
        built = [node.as_dict() for node in build_tree(meta, collapse=collapse).walk()]
        assert plain == built
