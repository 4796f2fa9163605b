"""Every family through the same engine: tiny random Llama, Mistral, Qwen2 and GPT-2
checkpoints built from their config classes (GQA and not, tied and untied heads, Qwen2's
biases, GPT-2's Conv1D), driven through the CLI, each checked against an independent
reference computed here with plain forward hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import (
    FAMILY_FIXTURES,
    PLANTED,
    fixture_config,
    fresh_run,
    json_of,
    save_family_model,
)
from optinspect.model.families import ADAPTERS, SUPPORTED_TYPES, adapter_for_config
from optinspect.model.families.published import PUBLISHED
from optinspect.model.family import config_module_names, family_config, list_config_params
from optinspect.model.names import layer_of, module_names, role_of

KINDS = tuple(kind for kind in FAMILY_FIXTURES if not kind.endswith("-wide"))
TEXT = "The quick brown fox jumps over the lazy dog"


def load_reference(folder: Path) -> torch.nn.Module:
    """The checkpoint as transformers loads it, in float32, independent of optinspect's
    loading (hub kernels kept out, as every load in the tests does)."""
    from transformers import AutoModelForCausalLM

    from optinspect.model.quiet import no_hub_kernels

    with no_hub_kernels():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def token_ids(out: dict) -> torch.Tensor:
    return torch.tensor([[token["id"] for token in out["tokens"]]])


def run_hooked(
    model: torch.nn.Module, ids: torch.Tensor
) -> tuple[list[str], list[str], dict[str, torch.Tensor]]:
    """Every module call's name in the order the calls start (forward pre-hooks) and in
    the order they finish (forward hooks), and each module's first output in float64."""
    started: list[str] = []
    finished: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(_m, _a, name=name):
            started.append(name)

        def post(_m, _a, out, name=name):
            finished.append(name)
            tensor = out if isinstance(out, torch.Tensor) else None
            if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
                tensor = out[0]
            if tensor is not None:
                outputs.setdefault(name, tensor.detach().double())

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(started)), list(dict.fromkeys(finished)), outputs


@pytest.mark.parametrize("kind", KINDS)
def test_trace_order_and_statistics_match_a_hook_reference(cli, family_model, kind) -> None:
    folder = family_model(kind)
    out = json_of(cli, "trace", TEXT, "--model", str(folder), "-q", "none", "--layer", "all")
    started, _, tensors = run_hooked(load_reference(folder), token_ids(out))
    traced = [m["name"] for m in out["modules"]]
    assert traced == [name for name in started if layer_of(name) is not None]
    for record in out["modules"]:
        x = tensors.get(record["name"])
        if record["stats"] is None or x is None:
            continue
        # float32 kernels against a float64 reference of the same float32 tensor:
        # sums of a few hundred terms keep 1e-5 relative, extremes are exact.
        scale = float(x.abs().max()) or 1.0
        assert record["stats"]["absmax"] == pytest.approx(float(x.abs().max()), rel=1e-6)
        assert record["stats"]["mean"] == pytest.approx(float(x.mean()), abs=1e-5 * scale)
        std = float(x.std(unbiased=False))
        assert record["stats"]["std"] == pytest.approx(std, rel=1e-5, abs=1e-6 * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_roles_are_the_order_a_layer_runs(family_model, kind) -> None:
    folder = family_model(kind)
    model = load_reference(folder)
    adapter = adapter_for_config(model.config)
    _, finished, _ = run_hooked(model, torch.tensor([[2, 100, 200]]))
    # the roles list a layer's modules in the order their forwards finish, the layer last;
    # this model runs those it has, in that order
    ran = [role_of(n) or "" for n in finished if layer_of(n) == 0]
    assert ran == [role for role in adapter.layer_roles if role in ran]
    assert set(ran) <= set(adapter.layer_roles) and ran[-1] == ""


@pytest.mark.parametrize("kind", KINDS)
def test_logits_are_identical_with_and_without_tracing(family_model, kind) -> None:
    from optinspect.engine.capture import capture
    from optinspect.model.loading import load_model

    loaded = load_model(str(family_model(kind)), quant="none", device="cpu")
    model = loaded.model
    ids = torch.tensor([[2, 100, 200, 300, 7]])
    with torch.inference_mode():
        plain = model(ids).logits
        with capture(model, module_names(model)):
            traced = model(ids).logits
    assert torch.equal(plain, traced)


@pytest.mark.parametrize("kind", KINDS)
def test_params_is_the_models_unique_parameter_count(cli, family_model, kind) -> None:
    folder = family_model(kind)
    model = load_reference(folder)
    unique = sum(p.numel() for p in model.parameters())  # a tied tensor once
    out = json_of(cli, "params", "--model", str(folder))
    assert out["total"] == unique
    raw = json.loads((folder / "config.json").read_text())
    entries, tied_to = list_config_params(raw)
    assert sum(e.numel for e in entries) == unique
    assert (tied_to is not None) == (model.lm_head.weight is model.get_input_embeddings().weight)
    assert config_module_names(raw) == module_names(model)


@pytest.mark.parametrize("kind", KINDS)
def test_lens_at_the_last_layer_is_the_models_argmax(cli, family_model, kind) -> None:
    folder = family_model(kind)
    out = json_of(cli, "lens", TEXT, "--model", str(folder), "-q", "none", "--layer", "-1")
    with torch.inference_mode():
        logits = load_reference(folder)(token_ids(out)).logits[0]
    top = [position[0]["id"] for position in out["layers"][-1]["predictions"]]
    assert top == logits.argmax(dim=-1).tolist()


def plant_in_norm(model: torch.nn.Module) -> None:
    """Scale dimension PLANTED of the norm before every attention and FFN input by 400:
    every q/k/v, gate/up (c_attn, c_fc) input carries it far above the 6.0 threshold."""
    for name, module in model.named_modules():
        if role_of(name) in ("input_layernorm", "post_attention_layernorm", "ln_1", "ln_2"):
            module.weight[PLANTED] = 400.0


@pytest.mark.parametrize("kind", KINDS)
def test_an_outlier_planted_in_a_norm_is_found(cli, tmp_path, tiny_dir, kind) -> None:
    folder = save_family_model(tmp_path / kind, tiny_dir, kind, plant_in_norm)
    out = json_of(cli, "outliers", TEXT, "--model", str(folder), "-q", "none")
    assert PLANTED in [d["dim"] for d in out["recurring"]]


@pytest.mark.parametrize("kind", KINDS)
def test_attention_has_every_query_head(cli, family_model, kind) -> None:
    folder = family_model(kind)
    out = json_of(cli, "attention", TEXT, "--model", str(folder), "-q", "none", "-l", "-1")
    heads = fixture_config(kind).num_attention_heads  # GQA repeats k/v for every q head
    assert out["num_heads"] == len(out["heads"]) == heads
    for row in out["weights"]:  # the mean over heads: still a distribution per query
        assert math.fsum(row) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_dry_run_and_tree_name_the_real_modules(cli, family_model, kind) -> None:
    folder = family_model(kind)
    real = json_of(cli, "trace", "Hello", "--model", str(folder), "-q", "none", "-l", "0")
    dry = json_of(cli, "trace", "Hello", "--model", str(folder), "-l", "0", "--dry-run")
    assert [m["name"] for m in dry["modules"]] == [m["name"] for m in real["modules"]]
    assert [m["shape"] for m in dry["modules"]] == [m["shape"] for m in real["modules"]]
    tree = json_of(cli, "tree", "--model", str(folder))
    assert tree["total"] == json_of(cli, "params", "--model", str(folder))["total"]


@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2", "gpt2"])
def test_compare_8bit_against_full_precision(cli, family_model, kind) -> None:
    folder = family_model(kind)
    out = json_of(cli, "compare", TEXT, "--model", str(folder), "-q", "8bit", "-a", "none")
    overview = json_of(cli, "trace", TEXT, "--model", str(folder), "-q", "none")
    assert [m["name"] for m in out["modules"]] == [m["name"] for m in overview["modules"]]
    assert out["modules"][-1]["name"] == "lm_head"


@pytest.mark.parametrize("kind", ["llama-gqa", "mistral", "qwen2", "gpt2"])
def test_calibrate_act_scales_have_smoothquants_keys(cli, family_model, tmp_path, kind) -> None:
    """SmoothQuant's smooth_lm reads, for every layer, act_scales of the input linears
    after each norm it folds into (Llama, Mistral, Qwen2: q/k/v_proj after
    input_layernorm, gate/up_proj after post_attention_layernorm), each a vector as wide
    as that norm."""
    folder = family_model(kind)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([TEXT, "Hello world", "The capital of France is Paris"]))
    scales_file = tmp_path / "act_scales.pt"
    result = cli(
        "calibrate", "--model", str(folder), "--file", str(corpus), "--samples", "3",
        "--act-scales", str(scales_file),
    )  # fmt: skip
    assert result.code == 0, result.err
    scales = torch.load(scales_file, weights_only=True)
    model = load_reference(folder)
    modules = dict(model.named_modules())
    adapter = adapter_for_config(model.config)
    pairs = adapter.smooth_pairs(model.config.num_hidden_layers)
    assert len(pairs) == 2 * model.config.num_hidden_layers
    for norm, linears in pairs:
        for linear in linears:
            assert scales[linear].shape == modules[norm].weight.shape
            assert bool((scales[linear] > 0).all())
            # the linears after one norm read one tensor: smooth_lm takes the first's scales
            assert torch.equal(scales[linear], scales[linears[0]])
    if kind != "gpt2":  # smooth_lm's own lookups (smoothquant/smooth.py), names written out
        for i in range(model.config.num_hidden_layers):
            layer = modules[f"model.layers.{i}"]
            for key, norm in (
                ("self_attn.q_proj", "input_layernorm"),
                ("mlp.gate_proj", "post_attention_layernorm"),
            ):
                width = getattr(layer, norm).weight.numel()
                assert (
                    scales[f"model.layers.{i}.{key}"].numel()
                    == width
                    == layer.get_submodule(key).in_features
                )


@pytest.mark.parametrize("kind", KINDS)
def test_8bit_runs_every_family(cli, family_model, kind) -> None:
    folder = family_model(kind)
    out = json_of(cli, "trace", TEXT, "--model", str(folder), "-q", "8bit", "-l", "0")
    types = {role_of(m["name"]): m["type"] for m in out["modules"]}
    adapter = adapter_for_config(json.loads((folder / "config.json").read_text()))
    assert {types[role] for role in adapter.linear_roles} == {"Linear8bitLt"}


@pytest.mark.parametrize("kind", ["llama-wide", "gpt2-wide"])
def test_4bit_runs_where_bitsandbytes_takes_the_layers(cli, family_model, kind) -> None:
    folder = family_model(kind)
    out = json_of(cli, "trace", TEXT, "--model", str(folder), "-q", "4bit", "-l", "0")
    types = {role_of(m["name"]): m["type"] for m in out["modules"]}
    adapter = adapter_for_config(json.loads((folder / "config.json").read_text()))
    assert {types[role] for role in adapter.linear_roles} == {"Linear4bit"}
    assert all(m["stats"]["nan"] == 0 for m in out["modules"] if m["stats"])


@pytest.mark.parametrize("model_type", SUPPORTED_TYPES)
def test_adapter_defaults_are_the_config_classes(model_type) -> None:
    from transformers import AutoConfig

    adapter = next(a for a in ADAPTERS if model_type in a.classes)
    config = AutoConfig.for_model(model_type)
    for key, value in adapter.defaults[model_type].items():
        # head_dim and kv heads None mean "worked out from the others", as in the class;
        # a key the class lacks is one its model does not read
        if key.startswith("_") or value is None or not hasattr(config, key):
            continue
        assert getattr(config, key) == value, key


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_rows_equal_the_meta_built_model(name) -> None:
    from optinspect.analyses.params import list_module_params
    from optinspect.model.spec import build_meta_model, config_from_raw

    raw = family_config(name)
    assert raw is not None
    model = build_meta_model(config_from_raw(raw))
    assert list_config_params(raw) == list_module_params(model)


#: Every row's total as counted from its real weights by others, not by our formula (tied
#: heads once): the hub API's safetensors.total, GGUF general.parameter_count, keras-hub
#: presets. The Llama 2 checkpoints' safetensors.total is 64 * layers higher: they also store
#: each layer's rotary inv_freq buffer (6,738,417,664 / 13,015,866,880 / 68,976,653,312).
KNOWN_TOTALS = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,  # keras-hub llama2_7b_en
    "meta-llama/Llama-2-13b-hf": 13_015_864_320,
    "meta-llama/Llama-2-70b-hf": 68_976_648_192,
    "meta-llama/Llama-3.1-8B": 8_030_261_248,  # hub safetensors.total
    "meta-llama/Llama-3.1-70B": 70_553_706_496,  # hub safetensors.total
    "meta-llama/Llama-3.1-405B": 405_853_388_800,  # hub safetensors.total (8 kv heads)
    "meta-llama/Llama-3.2-1B": 1_235_814_400,  # GGUF / transformers counts
    "meta-llama/Llama-3.2-3B": 3_212_749_824,  # hub safetensors.parameters.BF16
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,  # GGUF general.parameter_count
    "Qwen/Qwen2.5-0.5B": 494_032_768,  # keras-hub qwen2.5_0.5b_en
    "Qwen/Qwen2.5-1.5B": 1_543_714_304,  # hub safetensors.total
    "Qwen/Qwen2.5-3B": 3_085_938_688,  # keras-hub qwen2.5_3b_en
    "Qwen/Qwen2.5-7B": 7_615_616_512,  # hub "params": 7.616 (B)
    "Qwen/Qwen2.5-14B": 14_770_033_664,  # GGUF n_params
    # The model card says 32.5B (31.0B without embeddings), which is what an
    # intermediate_size of 27392 would give; config.json says 27648 and the hub's count
    # of the weights (32.8B params, keras-hub qwen2.5_instruct_32b_en) agrees with it.
    "Qwen/Qwen2.5-32B": 32_763_876_352,
    "Qwen/Qwen2.5-72B": 72_706_203_648,  # keras-hub qwen2.5_instruct_72b_en
    "gpt2": 124_439_808,  # keras-hub gpt2 presets, all four
    "openai-community/gpt2-medium": 354_823_168,
    "openai-community/gpt2-large": 774_030_080,
    "openai-community/gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize(("name", "total"), KNOWN_TOTALS.items())
def test_params_of_published_ids_answers_offline(cli, name, total) -> None:
    assert json_of(cli, "params", "--model", name)["total"] == total


def test_every_published_row_has_a_known_total_and_a_source() -> None:
    from optinspect.model.families.published import _SOURCES

    assert sorted(_SOURCES) == sorted(PUBLISHED)
    assert {family_config(name)["_name_or_path"] for name in KNOWN_TOTALS} == set(PUBLISHED)


@pytest.mark.parametrize("name", PUBLISHED)
def test_llama_3_rows_carry_their_rope_scaling(name) -> None:
    """Llama 3.1 and 3.2 store llama3 rope scaling (factor 8 and 32); no other row does."""
    scaling = family_config(name).get("rope_scaling")
    if name.startswith("meta-llama/Llama-3."):
        factor = 8.0 if name.startswith("meta-llama/Llama-3.1") else 32.0
        assert scaling is not None
        assert scaling["rope_type"] == "llama3"
        assert scaling["factor"] == factor
        assert scaling["original_max_position_embeddings"] == 8192
    else:
        assert scaling is None


def test_params_of_llama_31_8b_imports_no_torch() -> None:
    fresh = fresh_run(["params", "--model", "meta-llama/Llama-3.1-8B", "-f", "json"])
    assert fresh.code == 0, fresh.err
    assert json.loads(fresh.out)["total"] == 8_030_261_248
    assert "torch" not in fresh.heavy


def test_docs_family_table_is_the_formula() -> None:
    """docs/families.md's offline sizes are what params answers, row by row."""
    import re

    from optinspect.analyses.params import inventory_params

    text = (Path(__file__).resolve().parents[1] / "docs" / "families.md").read_text()
    rows = re.findall(r"^\| `([^`]+)`(?: \(`[^`]+`\))? \| ([\d,]+) \|$", text, re.M)
    assert sorted(name for name, _ in rows) == sorted(PUBLISHED)
    for name, total in rows:
        assert inventory_params(name).total == int(total.replace(",", ""))


@pytest.mark.parametrize(
    "args",
    [
        ["trace", TEXT, "--layer", "all"],
        ["lens", TEXT],
        ["attention", TEXT, "-l", "1"],
        ["outliers", TEXT],
        ["compare", TEXT, "-a", "none"],
    ],
    ids=["trace", "lens", "attention", "outliers", "compare"],
)
def test_tiny_llama_through_the_server_is_the_local_output(cli, args) -> None:
    """The warm server answers for tiny-llama as for tiny: stdout the same, byte for byte."""
    import threading

    from optinspect.commands.options import LoadOptions
    from optinspect.serve.place import private_dir, socket_path
    from optinspect.serve.server import ModelServer

    load = LoadOptions(model="tiny-llama", quant="8bit")
    private_dir(create=True)
    server = ModelServer(socket_path(), load, load.load(), idle=None)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        full = [*args, "--model", "tiny-llama", "-q", "8bit", "-f", "json"]
        served = cli(*full)
        assert server.served == 1, "the server did not answer"
        local = cli(*full, "--no-server")
    finally:
        server.stop("test over")
        thread.join(timeout=30)
    assert served.code == local.code == 0, served.err + local.err
    assert served.out == local.out and served.out.strip()


@pytest.mark.parametrize("name", [*PUBLISHED, "facebook/opt-350m"])
def test_every_parameter_has_its_group(name) -> None:
    """--by group puts every parameter of every family in a named group, none in
    "other", and the attention and FFN groups are exactly their layers' linears."""
    from optinspect.analyses.params import count_params, inventory_params

    inventory = inventory_params(name)
    rows = {row.name: row.params for row in count_params(inventory, by="group").rows}
    assert "other" not in rows and sum(rows.values()) == inventory.total
    adapter = adapter_for_config(family_config(name))
    linears = [e for e in inventory.entries if role_of(e.module) in adapter.linear_roles]
    assert rows["attention projections"] + rows["feed-forward layers"] == sum(
        e.numel for e in linears
    )


@pytest.mark.parametrize("kind", KINDS)
def test_report_is_each_commands_json(cli, family_model, kind) -> None:
    """One report pass gives what trace and lens give alone; the FFN sparsity is left
    out (no ReLU), and the depth chart follows the family's FFN input linear."""
    folder = family_model(kind)
    args = (TEXT, "--model", str(folder), "-q", "none")
    doc = json_of(cli, "report", *args)
    trace = json_of(cli, "trace", *args, "--layer", "all")
    assert [m["name"] for m in doc["trace"]["modules"]] == [m["name"] for m in trace["modules"]]
    lens = json_of(cli, "lens", *args, "--top-k", "5")
    # the report runs eager attention, lens the default kernel: float32 rounding apart
    for got, want in zip(doc["lens"]["layers"], lens["layers"], strict=True):
        for mine, theirs in zip(got["predictions"], want["predictions"], strict=True):
            probs = [p["prob"] for p in theirs]
            assert [p["prob"] for p in mine] == pytest.approx(probs, rel=1e-4, abs=1e-7)
            if probs[0] - probs[1] > 1e-5:  # a clear winner is the same token
                assert mine[0]["id"] == theirs[0]["id"]
    assert doc["sparsity"] is None and doc["trace"]["ffn"] is None and trace["ffn"] is None
    adapter = adapter_for_config(json.loads((folder / "config.json").read_text()))
    assert doc["series"]["role"]["role"] == adapter.ffn_in
