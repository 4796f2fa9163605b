"""engine/preflight.py: every check that needs no weights, its exact message and exit 2.

Through the CLI too, with the loader replaced by a spy that fails the test (``no_load``),
including the config checks that exit 1 and the placement check inside load_model that
must read no weight file (``no_weights``)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import TINY, UNUSUAL_CONFIGS, assert_error, small_config
from optinspect.engine import preflight as pf
from optinspect.errors import EXIT_USAGE, UsageError
from optinspect.model.placement import check_offload_dir


def usage_message(call, *args, **kwargs) -> str:
    """The message of the UsageError ``call`` raises, after checking its exit code."""
    with pytest.raises(UsageError) as info:
        call(*args, **kwargs)
    assert info.value.exit_code == EXIT_USAGE == 2
    return str(info.value)


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [
        (pf.check_text, ("  \t", "lens"), "the text is empty: give at least one word to lens"),
        (pf.check_batch_size, (0,), "--batch-size must be at least 1, not 0"),
        (pf.check_top_k, (0, 512), "--top-k must be at least 1, not 0"),
        (pf.check_top_k, (513, 512), "--top-k 513 is more than the vocabulary of 512 tokens"),
        (pf.check_threshold, (0.0,), "--threshold must be a finite number above 0, not 0.0"),
        (pf.check_threshold, (math.nan,), "--threshold must be a finite number above 0, not nan"),
        (pf.check_threshold, (math.inf,), "--threshold must be a finite number above 0, not inf"),
        (
            pf.check_tolerance,
            (-0.5,),
            "--tolerance must be a finite number of at least 0, not -0.5",
        ),
        (
            pf.check_tolerance,
            (math.nan,),
            "--tolerance must be a finite number of at least 0, not nan",
        ),
        (pf.resolve_single_layer, ("0-1", 4), "--layer 0-1 names 2 layers: give exactly one"),
        (pf.resolve_single_layer, ("9", 4), "layer 9 does not exist: the model has layers 0-3"),
        (pf.resolve_head, (4, 4), "head 4 does not exist: the model has heads 0-3"),
        (pf.resolve_head, (-5, 4), "head -5 does not exist: the model has heads 0-3"),
        (pf.resolve_head, (1, 1), "head 1 does not exist: the model has head 0"),
        (
            pf.parse_stats,
            ("mean,median",),
            "unknown statistic 'median': choose from mean, std, min, max, absmax, rms, zeros, "
            "nan, inf",
        ),
        (
            pf.parse_stats,
            (" , ",),
            "--stats is empty: choose from mean, std, min, max, absmax, rms, zeros, nan, inf",
        ),
    ],
)
def test_each_check_refuses_with_its_message(call, args: tuple, message: str) -> None:
    assert usage_message(call, *args) == message


def test_checks_pass_good_values_through() -> None:
    assert pf.check_text(" hi ", "trace") == " hi "
    assert pf.check_batch_size(1) == 1
    assert pf.check_top_k(512, 512) == 512
    assert pf.check_threshold(6.0) == 6.0
    assert pf.check_tolerance(0.0) == 0.0  # exact equality is a valid demand
    assert pf.resolve_single_layer("-1", 4) == 3
    assert pf.resolve_head(-1, 4) == 3
    assert pf.parse_stats(None) == ("mean", "std", "min", "max", "absmax", "rms", "zeros", "nan",
                                    "inf")  # fmt: skip
    assert pf.parse_stats("zeros, mean") == ("mean", "zeros")  # the usual order, not the typed one


def test_output_path_checks(tmp_path: Path) -> None:
    existing = tmp_path / "out.json"
    existing.write_text("{}")
    assert usage_message(pf.check_output_path, existing, force=False) == (
        f"{existing} exists: use --force to overwrite it"
    )
    assert pf.check_output_path(existing, force=True) == existing
    # Every output file (--save, --plot, --png) refuses to overwrite without --force.
    assert usage_message(pf.check_output_path, existing) == (
        f"{existing} exists: use --force to overwrite it"
    )
    assert usage_message(
        pf.check_output_path, tmp_path / "a.jpg", suffix=".png", option="--png"
    ) == ("--png writes PNG: give a file name ending in .png")
    folder = usage_message(pf.check_output_path, tmp_path)
    assert folder == f"cannot write {tmp_path}: it is a folder"
    orphan = tmp_path / "no" / "out.json"
    assert usage_message(pf.check_output_path, orphan) == (
        f"cannot write {orphan}: folder {tmp_path / 'no'} does not exist"
    )


def test_offload_dir_is_tried_by_writing_a_file(tmp_path: Path) -> None:
    # /proc is a folder whose mode lets root write, and os.access said yes to root; no
    # file can be made there, which only an attempt finds.
    message = usage_message(check_offload_dir, "/proc/optinspect-offload")
    assert re.fullmatch(
        r"--offload-dir /proc/optinspect-offload cannot be written: folder /proc takes no "
        r"new file \([a-z ]+\)",
        message,
    ), message
    assert check_offload_dir(tmp_path / "new" / "sub") == tmp_path / "new" / "sub"
    assert list(tmp_path.iterdir()) == []  # the trial file is gone, and nothing was made


def test_offload_dir_refused_where_a_write_fails_though_access_says_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only mount, an ACL or root squash on NFS: the bits say yes, the write says no.
    import tempfile

    def read_only(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    assert usage_message(check_offload_dir, tmp_path) == (
        f"--offload-dir {tmp_path} cannot be written: folder {tmp_path} takes no new file "
        "(read-only file system)"
    )


def test_preflight_checks_against_the_config() -> None:
    plan = pf.preflight("tiny", layers="1-2", head=-1, top_k=5, filters=("*.fc1",))
    assert plan.num_layers == 4 and plan.layers == [1, 2] and plan.head == 3
    assert plan.names == ("model.decoder.layers.1.fc1", "model.decoder.layers.2.fc1")
    assert pf.preflight("tiny", single_layer="-1").layers == [3]
    assert usage_message(pf.preflight, "tiny", top_k=513) == (
        "--top-k 513 is more than the vocabulary of 512 tokens"
    )
    assert usage_message(pf.preflight, "tiny", filters=("*.nope",)) == (
        "no module matches --filter *.nope"
    )


def test_preflight_of_a_family_model_is_offline_and_weightless() -> None:
    # opt-175b's published config is built in: its 96 layers are checked with no download.
    assert usage_message(pf.preflight, "facebook/opt-175b", layers="96") == (
        "layer 96 does not exist: the model has layers 0-95"
    )


def test_preflight_reads_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors
    import safetensors.torch
    import torch
    import transformers

    import optinspect.model.loading as loading

    def forbidden(*args, **kwargs):
        raise AssertionError("preflight read weights")

    # Import transformers' model code first: it binds safe_open when imported, and a
    # stub bound there would outlive this test.
    model_class = transformers.OPTForCausalLM
    monkeypatch.setattr(safetensors.torch, "load_file", forbidden)
    monkeypatch.setattr(safetensors, "safe_open", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(model_class, "from_pretrained", forbidden)
    monkeypatch.setattr(loading, "load_model", forbidden)
    plan = pf.preflight("tiny", layers="all", filters=("*.fc2",), head=0, top_k=1)
    assert plan.layers == [0, 1, 2, 3] and len(plan.names or ()) == 4


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("trace", ["--layer", "9"], "layer 9 does not exist: the model has layers 0-3"),
        ("lens", ["--top-k", "0"], "--top-k must be at least 1, not 0"),
        ("attention", ["--head", "4"], "head 4 does not exist: the model has heads 0-3"),
        ("compare", ["-t", "-1"], "--tolerance must be a finite number of at least 0, not -1.0"),
        ("outliers", ["--threshold", "0"], "--threshold must be a finite number above 0, not 0.0"),
    ],
)
def test_commands_refuse_before_loading_the_model(
    cli, monkeypatch: pytest.MonkeyPatch, command: str, args: list[str], message: str
) -> None:
    import optinspect.commands.common as common

    def forbidden(*a, **k):
        raise AssertionError("the model was loaded before the values were checked")

    monkeypatch.setattr(common, "load_with_status", forbidden)
    result = cli(command, "Hello", "--model", "tiny", *args)
    assert (result.code, result.err) == (2, f"Error: {message}\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filter", "*.nope"], "no module matches --filter *.nope"),
        (
            ["--stats", "mean,median"],
            "unknown statistic 'median': choose from mean, std, min, max, absmax, rms, zeros, "
            "nan, inf",
        ),
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--tokens", "3"], "--tokens only applies with --dry-run"),
    ],
)
def test_selection_errors(cli, args: list[str], message: str) -> None:
    result = cli("trace", "Hi", "--model", "tiny", "-q", "none", *args)
    assert result.code == 2
    assert result.err == f"Error: {message}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace", "--layer", "9"], "layer 9 does not exist: the model has layers 0-3"),
        (["trace", "--filter", "*.nope"], "no module matches --filter *.nope"),
        (["compare", "--filter", "*.nope"], "no module matches --filter *.nope"),
        (["lens", "--top-k", "600"], "--top-k 600 is more than the vocabulary of 512 tokens"),
        (["attention", "--head", "9"], "head 9 does not exist: the model has heads 0-3"),
    ],
)
def test_errors_the_config_decides_come_back_without_torch(args: list[str], message: str) -> None:
    """They answer as fast as Python starts: neither torch nor transformers is imported."""
    import subprocess
    import sys

    command, *options = args
    code = (
        "import sys\n"
        "from optinspect.cli import run\n"
        f"code = run({[command, 'Hello', '--model', 'tiny', *options]!r})\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (2, f"Error: {message}\n")
    assert proc.stdout == "[]\n"


@pytest.mark.parametrize("overrides", [{}, *UNUSUAL_CONFIGS])
def test_config_module_names_equal_the_meta_built_model(overrides: dict) -> None:
    from transformers import OPTConfig

    from optinspect.model.family import FAMILY, config_module_names
    from optinspect.model.names import module_names
    from optinspect.model.spec import build_meta_model

    raw, meta = small_config(overrides)
    assert config_module_names(raw) == module_names(meta)
    for name in ("facebook/opt-125m", "facebook/opt-350m"):
        meta = build_meta_model(OPTConfig(**FAMILY[name]))
        assert config_module_names(FAMILY[name]) == module_names(meta)


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Like ``no_load``, one step later: load_model may start, but no tokenizer or weight
    file may be read (for checks that live inside load_model)."""
    import optinspect.model.loading as loading

    calls: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        def refuse(*args: object, **kwargs: object) -> object:
            calls.append(name)
            pytest.fail(f"{name} was called: this check must come before any weight is read")

        return refuse

    for name in ("_load_weights", "_load_tokenizer", "check_safetensors"):
        monkeypatch.setattr(loading, name, spy(name))
    return calls


# --- checks before loading ---------------------------------------------------------------

LAYER_SPEC = "cannot read layer spec '3-': use N, N-M, N,M, -1 or all"
NO_LAYER_9 = "layer 9 does not exist: the model has layers 0-3"


#: (arguments, message): usage errors (exit 2) found from the options and the config alone.
PRELOAD_ERRORS = [
    (("trace", "x", "--layer", "3-"), LAYER_SPEC),
    (("trace", "x", "--layer", "9"), NO_LAYER_9),
    (("trace", "x", "-b", "0"), "--batch-size must be at least 1, not 0"),
    (("trace", "x", "-b", "-3"), "--batch-size must be at least 1, not -3"),
    (("trace", "x", "--filter", "*.nope"), "no module matches --filter *.nope"),
    (
        ("trace", "x", "--filter", "model"),
        "no module matches --filter model (model never runs: the forward pass calls model.decoder)",
    ),
    (("compare", "x", "--layer", "9"), NO_LAYER_9),
    (("outliers", "x", "-b", "0"), "--batch-size must be at least 1, not 0"),
    (("lens", "x", "--top-k", "0"), "--top-k must be at least 1, not 0"),
    (("attention", "x", "--head", "9"), "head 9 does not exist: the model has heads 0-3"),
    (("trace", "x", "--force"), "--force only applies with --save or --plot"),
    (
        ("trace", "x", "--device", "cpu", "--device-map", "auto"),
        "give --device or --device-map, not both: the map 'auto' places the model",
    ),
    (
        ("trace", "--dry-run", "--tokens", "16", "some text"),
        "give TEXT or --tokens, not both",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), [pytest.param(a, m, id=" ".join(a)) for a, m in PRELOAD_ERRORS]
)
def test_usage_errors_before_loading(cli, no_load, args, message) -> None:
    assert_error(cli(*args, *TINY), 2, message)
    assert no_load == []


def test_8bit_with_float32_is_refused_before_loading(cli, no_load) -> None:
    # -q 8bit here, not TINY's none: the rule is about LLM.int8's compute dtype.
    result = cli("trace", "x", "--model", "tiny", "-q", "8bit", "--dtype", "float32")
    message = (
        "--quant 8bit computes in float16, not float32: use --dtype auto or float16, "
        "or --quant 4bit or none for float32"
    )
    assert_error(result, 2, message)


def test_empty_model_is_refused_before_loading(cli, no_load) -> None:
    result = cli("trace", "x", "--model", "", "-q", "none")
    assert_error(result, 2, "--model is empty: give a hub id, a folder, tiny or tiny-llama")


def test_input_file_that_is_a_folder(cli, no_load, tmp_path: Path) -> None:
    result = cli("trace", "--file", str(tmp_path), *TINY)
    assert_error(result, 2, f"input file {tmp_path} is a folder")


def test_existing_save_file_needs_force(cli, no_load, tmp_path: Path) -> None:
    target = tmp_path / "existing.safetensors"
    target.write_bytes(b"keep me")
    result = cli("trace", "x", *TINY, "--save", str(target))
    assert_error(result, 2, f"{target} exists: use --force to overwrite it")
    assert target.read_bytes() == b"keep me"


def test_save_where_nothing_can_be_written(cli, no_load) -> None:
    # /proc exists and is a folder, but takes no new file: found by trying, before loading.
    result = cli("trace", "x", *TINY, "--save", "/proc/x.safetensors")
    assert result.code == 2
    # The OS's reason varies by kernel and filesystem; the sentence around it is ours.
    pattern = (
        r"Error: cannot write /proc/x\.safetensors: folder /proc takes no new file \([a-z ]+\)\n"
    )
    assert re.fullmatch(pattern, result.err), result.err


def test_save_onto_a_folder_even_with_force(cli, no_load, tmp_path: Path) -> None:
    result = cli("trace", "x", *TINY, "--save", str(tmp_path), "--force")
    assert_error(result, 2, f"cannot write {tmp_path}: it is a folder")


def test_plot_must_be_png(cli, no_load, tmp_path: Path) -> None:
    result = cli("trace", "x", *TINY, "--plot", str(tmp_path / "out.jpg"))
    assert_error(result, 2, "--plot writes PNG: give a file name ending in .png")


def test_existing_attention_png_needs_force(cli, no_load, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "existing.png"
    target.write_bytes(b"keep me")
    result = cli("attention", "x", *TINY, "--png", str(target))
    assert_error(result, 2, f"{target} exists: use --force to overwrite it")
    assert target.read_bytes() == b"keep me"


def test_config_whose_heads_do_not_divide_hidden(cli, no_load, make_fixture_model) -> None:
    # A model with 5 heads of hidden 32 cannot even be built to save it, so a good
    # checkpoint gets its config edited afterwards: the config alone must be refused.
    folder = make_fixture_model("five-heads")
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("trace", "x", "--model", str(folder), "-q", "none")
    message = (
        f"the config of {folder} cannot be built: "
        "hidden_size 32 is not a multiple of num_attention_heads 5"
    )
    assert_error(result, 1, message)


def test_config_without_model_type(cli, no_load, tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-type"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("trace", "x", "--model", str(folder), "-q", "none")
    message = f"{folder} is not a model optinspect supports: its config has no model_type "
    assert_error(result, 1, message + "(supported: opt, llama, mistral, qwen2, qwen3 or gpt2)")


def test_quantized_offload_without_cuda_reads_no_weight(cli, no_weights) -> None:
    # This check lives in load_model (resolve_placement), not in preflight: the loading
    # spinner has started, but no tokenizer or weight file is read before it fails.
    import torch

    assert not torch.cuda.is_available()  # conftest hides CUDA unless -m gpu
    result = cli(
        "trace", "x", "--model", "tiny", "-q", "8bit", "--max-memory", "cpu=10KiB",
        "--device-map", "auto",
    )  # fmt: skip
    message = (
        "--quant 8bit cannot offload weights without CUDA (bitsandbytes moves them through "
        "a GPU): use --quant none with --max-memory or --offload-dir on the CPU"
    )
    assert_error(result, 2, message)
    assert no_weights == []


def test_compare_refuses_quantized_offload_before_the_reference_loads(cli, no_load) -> None:
    import torch

    assert not torch.cuda.is_available()
    result = cli(
        "compare", "x", "--model", "tiny", "-q", "8bit", "--against", "none",
        "--max-memory", "cpu=10KiB",
    )  # fmt: skip
    assert result.code == 2
    assert no_load == []


def test_plot_without_layer_outputs_is_refused_before_loading(cli, no_load, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    result = cli("trace", "x", *TINY, "--filter", "*.fc1", "--plot", str(tmp_path / "p.png"))
    assert_error(
        result,
        2,
        "--plot needs the decoder layers' outputs: use it without --filter, or with --layer all",
    )
    assert no_load == []
