"""Shared fixtures: no network, tiny models only, CLI runs captured in-process."""

from __future__ import annotations

import atexit
import difflib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from optinspect.results.trace import TraceResult

# Isolate every test from the user's Hugging Face cache and from the network,
# before anything imports huggingface_hub (it reads these at import time).
_HF_HOME = tempfile.mkdtemp(prefix="optinspect-hf-")
# A private runtime folder, so no test talks to a server the user runs (optinspect serve).
_RUNTIME = tempfile.mkdtemp(prefix="oi-run-")
atexit.register(shutil.rmtree, _RUNTIME, ignore_errors=True)
# A private temp folder too: a server's lock is <temp dir>/optinspect-<uid>, one per user
# whatever XDG_RUNTIME_DIR says, so a test's server must not meet the user's, nor those
# of another test run at the same time. This process's tempfile reads it from here on.
_TMPDIR = tempfile.mkdtemp(prefix="oi-tmp-")
atexit.register(shutil.rmtree, _TMPDIR, ignore_errors=True)
tempfile.tempdir = _TMPDIR

# What every test sees, whatever shell runs the suite: set here, and again before
# each test (a test that changes one gets it back). The names below them are removed.
ISOLATED_ENV = {
    "HF_HOME": _HF_HOME,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "XDG_RUNTIME_DIR": _RUNTIME,
    "TMPDIR": _TMPDIR,
    "COLUMNS": "200",
}
REMOVED_ENV = (
    # colour and terminal: rich reads them when a Console is made
    "NO_COLOR",
    "FORCE_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "TERM",
    "LINES",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
    # optinspect's own settings
    "OPTINSPECT_MODEL",
    "OPTINSPECT_NO_SERVER",
    "OPTINSPECT_STATS",
    # the hub: a token or endpoint of the user's must not change what a test meets
    "HF_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "USE_HUB_KERNELS",
)
os.environ.update(ISOLATED_ENV)
for _name in REMOVED_ENV:
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from ISOLATED_ENV, with no colour, terminal or hub variable of
    the shell that runs the suite (NO_COLOR=1 there once failed two tests)."""
    for name, value in ISOLATED_ENV.items():
        monkeypatch.setenv(name, value)
    for name in REMOVED_ENV:
        monkeypatch.delenv(name, raising=False)


def gpu_selected(markexpr: str) -> bool:
    """Whether ``-m`` asks for the GPU tests: it names gpu, and not as ``not gpu``."""
    return bool(re.search(r"\bgpu\b", markexpr)) and not re.search(r"\bnot\s+gpu\b", markexpr)


def pytest_configure(config: pytest.Config) -> None:
    # CPU tests assume --device auto means the CPU (compare's float32 reference, disk
    # offload with cpu=600KB, the dtype in headers), so CUDA is hidden unless the run
    # selects the GPU tests (pytest -m gpu). This runs before any test module imports
    # torch, and CUDA_VISIBLE_DEVICES is read when torch first initialises CUDA.
    # The same runs switch Triton's interpreter on, so tests/test_fused.py checks the
    # CUDA statistics kernel on CPU tensors. Triton reads it when first imported
    # (its reductions are kernels too), so it must be set before anything imports it.
    if not gpu_selected(config.option.markexpr or ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    reason = "needs CUDA: run with pytest -m gpu" if hidden else "needs CUDA, absent here"
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def triton_fallback() -> str | None:
    """Why the Triton statistics kernel switched itself off in this process, or None.

    ``fused_triton._broken`` is process-global: once set, every later CUDA statistic
    takes the eager path and the tests comparing statistics still pass, so nothing
    else in a run shows that the kernel stopped being tested. Read without importing.
    """
    import sys

    module = sys.modules.get("optinspect.engine.fused_triton")
    return getattr(module, "_broken", None)


#: The first test after which the kernel was found switched off.
_fallback_seen_after: list[str] = []


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if not _fallback_seen_after and triton_fallback() is not None:
        _fallback_seen_after.append(nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if triton_fallback() is not None and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    broken = triton_fallback()
    if broken is not None:
        terminalreporter.write_line(
            "FAILED: the Triton statistics kernel failed and switched itself off "
            f"(first seen after {', '.join(_fallback_seen_after) or 'the last test'}); every "
            f"later statistic took the eager path: {broken}",
            red=True,
        )
    elif gpu_selected(config.option.markexpr or ""):
        terminalreporter.write_line("Triton statistics kernel: no fallback in this run")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden/* from current output"
    )


GOLDEN_DIR = Path(__file__).parent / "golden"

#: Characters only a table (or tree) draws: a line holding one is a table line.
BOX = frozenset("┃│┏┓┡┩└┘┌┐├┤┼╇")
#: Numbers as a table shows them: 12, -0.0025, 4.9e-05, 47.7%, 125,239,296.
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?(?![\w.])")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``golden(name, text)``: ``text`` must equal tests/golden/<name> exactly.

    With ``--update-golden`` the file is rewritten from ``text`` instead. Bytes,
    not text mode, so no platform's newline translation changes what is compared.
    """
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if update:
            path.write_bytes(text.encode("utf-8"))
            return
        if not path.exists():
            pytest.fail(
                f"tests/golden/{name} does not exist: run pytest --update-golden", pytrace=False
            )
        expected = path.read_bytes().decode("utf-8")
        if text == expected:
            return
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"tests/golden/{name}",
                tofile="rendered now",
            )
        )
        if expected.split() == text.split():
            diff = "(only whitespace differs: trailing spaces or line ends)\n" + diff
        pytest.fail(
            f"output differs from tests/golden/{name}; if the change is intended, "
            f"rerun with --update-golden and review the diff in git\n{diff}",
            pytrace=False,
        )

    return check


@dataclass
class CliResult:
    code: int
    out: str
    err: str


#: Modules a command must not import where it needs no weights (help, family sizes).
HEAVY = ("torch", "transformers", "matplotlib")


@dataclass
class Fresh:
    """A fresh interpreter's run of the CLI: exit code, stdout, stderr, and which of
    ``HEAVY`` it had imported by the end."""

    code: int
    out: str
    err: str
    heavy: list[str]


def fresh_run(*argvs: list[str]) -> Fresh:
    """Each argv through ``optinspect.cli.run`` in a new interpreter, in order, stopping at
    the first that fails."""
    import subprocess

    code = (
        "import json, sys\nfrom optinspect.cli import run\n"
        f"for argv in {list(argvs)!r}:\n    code = run(argv)\n    if code:\n        break\n"
        f"imported = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stderr.write('\\nHEAVY=' + json.dumps(imported))\nsys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err, _, heavy = proc.stderr.rpartition("\nHEAVY=")
    return Fresh(proc.returncode, proc.stdout, err, json.loads(heavy) if heavy else list(HEAVY))


#: OPT configs off the common path: projections with post-LayerNorm, no biases and no
#: affine norms, an untied head without the final norm.
UNUSUAL_CONFIGS = (
    {"word_embed_proj_dim": 16, "do_layer_norm_before": False},
    {"enable_bias": False, "layer_norm_elementwise_affine": False},
    {"tie_word_embeddings": False, "_remove_final_layer_norm": True},
)


def small_config(overrides: dict) -> tuple[dict, Any]:
    """A three-layer OPT config (as a raw dict) with ``overrides``, and its meta-built model."""
    from transformers import OPTConfig

    from optinspect.model.spec import build_meta_model

    raw = {"hidden_size": 32, "num_hidden_layers": 3, "ffn_dim": 64, "num_attention_heads": 4}
    raw.update(overrides)
    return raw, build_meta_model(OPTConfig(**raw))


#: The keys every single-sentence result opens with: the schema and how the model ran.
RESULT_HEAD = frozenset({"schema", "model", "quant", "device", "dtype", "random_weights"})


def json_of(cli: Callable[..., CliResult], *args: str) -> dict:
    """``cli(*args, "--format", "json")``, which must succeed, parsed."""
    import json

    result = cli(*args, "--format", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


#: The hidden dimension ``plant_outlier`` makes an outlier in every pre-LN input.
PLANTED = 5


def plant_outlier(model: object) -> None:
    """A LayerNorm bias of 20 at dimension PLANTED: every q/k/v and fc1 input carries it."""
    for layer in model.model.decoder.layers:  # type: ignore[attr-defined]
        layer.self_attn_layer_norm.bias[PLANTED] = 20.0
        layer.final_layer_norm.bias[PLANTED] = 20.0


#: The options of a quick CPU run of the tiny model.
TINY = ("--model", "tiny", "-q", "none")
#: The tolerance of ``assert_same``: float32 rounding, well below any difference that matters.
REL, ABS = 1e-5, 1e-6


def assert_same(plain: Any, offloaded: Any, where: str = "") -> None:
    """Equal structure and exact ints and strings; floats within REL/ABS: the same
    computation run two ways (offloaded, through the API) rounds alike to float32's
    precision, but need not give the same bits."""
    if isinstance(plain, dict):
        assert set(plain) == set(offloaded), where
        for key in plain:
            assert_same(plain[key], offloaded[key], f"{where}.{key}")
    elif isinstance(plain, (list, tuple)):
        assert len(plain) == len(offloaded), where
        for i, (a, b) in enumerate(zip(plain, offloaded, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(plain, float) and not isinstance(plain, bool):
        assert offloaded == pytest.approx(plain, rel=REL, abs=ABS), where
    else:
        assert offloaded == plain, where


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """Make ``data`` the process's stdin for this test."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def jsonl(out: str) -> list[dict]:
    """One parsed document per line of JSONL output."""
    return [json.loads(line) for line in out.splitlines()]


def assert_error(result: CliResult, code: int, message: str) -> None:
    """The run failed with ``code`` and exactly the line ``Error: <message>`` on stderr."""
    assert (result.code, result.err) == (code, f"Error: {message}\n"), result.out


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make loading a model fail the test (pytest.fail is a BaseException, so the CLI's
    error boundary cannot turn it into an exit code). Returns the calls seen."""
    import optinspect.commands.common as common
    import optinspect.model.loading as loading

    calls: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        def refuse(*args: object, **kwargs: object) -> object:
            calls.append(name)
            pytest.fail(f"{name} was called: this check must come before any model loads")

        return refuse

    monkeypatch.setattr(common, "load_with_status", spy("load_with_status"))
    monkeypatch.setattr(loading, "load_model", spy("load_model"))
    return calls


@pytest.fixture
def sentences_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A file holding the test module's ``SENTENCES``, one a line."""
    path = tmp_path / "s.txt"
    path.write_text("\n".join(request.module.SENTENCES) + "\n", encoding="utf-8")
    return path


def sample_result(dry_run: bool = False) -> TraceResult:
    """A hand-built trace record: every kind of row, undefined statistics and markup in a token."""
    from optinspect.results.records import ModelInfo, ModuleRecord, TensorStats, Token
    from optinspect.results.trace import TraceResult

    # In STAT_NAMES' order: mean, std, min, max, absmax, rms, zeros, nan, inf.
    stats = TensorStats(0.0123456, 1.5, -3.25, 4.0, 4.0, 1.5, 0.125, 0, 0)
    broken = TensorStats(None, None, None, None, None, None, 0.0, 4, 2)

    def record(index: int, name: str, type_: str, depth: int, **kw: object) -> ModuleRecord:
        base = dict(
            index=index,
            name=name,
            type=type_,
            layer=0,
            call=0,
            depth=depth,
            output="tensor",
            shape=(1, 3, 8),
            dtype="float16",
            device="cpu",
            weight_dtype=None,
            weight_shape=None,
            stats=None if dry_run else stats,
        )
        base.update(kw)
        return ModuleRecord(**base)  # type: ignore[arg-type]

    modules = (
        record(0, "model.decoder.layers.0", "OPTDecoderLayer", 0),
        record(
            1,
            "model.decoder.layers.0.fc1",
            "Linear8bitLt",
            1,
            shape=(3, 32),
            weight_dtype="int8",
            weight_shape=(32, 8),
        ),
        record(
            2,
            "model.decoder.layers.0.fc1",
            "Linear8bitLt",
            1,
            call=1,
            shape=(3, 32),
            weight_dtype="int8",
            weight_shape=(32, 8),
            stats=None if dry_run else broken,
        ),
        record(
            3,
            "model.decoder.layers.0.odd",
            "Odd",
            1,
            output="none",
            shape=None,
            dtype=None,
            stats=None,
        ),
    )
    return TraceResult(
        info=ModelInfo("tiny", "8bit", "cpu", "float16", random_weights=True),
        text="Hi [bold]x",
        tokens=(Token(2, "</s>"), Token(10, "Hi"), Token(11, " [bold]x")),
        modules=modules,
        dry_run=dry_run,
    )


def render_params_text(inventory: Any, by: str, loaded: Any = None) -> str:
    """The params table of ``inventory`` grouped ``by``, as a 140-column console prints it."""
    from rich.console import Console

    from optinspect.analyses.params import count_params
    from optinspect.render.params import render_params

    stream = io.StringIO()
    console = Console(file=stream, width=140, color_system=None, force_terminal=False)
    render_params(console, count_params(inventory, by=by), loaded)
    return stream.getvalue()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run the real CLI entry point in-process and capture what it printed."""
    from optinspect.cli import run

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from optinspect.model.spec import tiny_path

    return tiny_path()


@pytest.fixture(scope="session")
def load_tiny() -> Callable[..., object]:
    """Load the built-in tiny model once per quantization for the whole session."""
    from optinspect.model.loading import load_model

    cache: dict[str, object] = {}

    def get(quant: str = "none"):
        if quant not in cache:
            cache[quant] = load_model("tiny", quant=quant, device="cpu")
        return cache[quant]

    return get


def save_fixture_model(
    folder: Path,
    tiny_dir: Path,
    mutate: Callable[[object], None] | None = None,
    **overrides: object,
) -> Path:
    """Write a random-weight OPT checkpoint built from OPTConfig, with the tiny tokenizer.

    ``mutate`` may change the model (plant a NaN, an outlier) before it is saved.
    """
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    settings: dict[str, object] = {
        "vocab_size": 512,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "ffn_dim": 64,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "word_embed_proj_dim": 32,
        "pad_token_id": 1,
        "bos_token_id": 2,
        "eos_token_id": 2,
    }
    settings.update(overrides)
    torch.manual_seed(0)
    return save_with_tiny_tokenizer(
        OPTForCausalLM(OPTConfig(**settings)).eval(), folder, tiny_dir, mutate
    )


def save_with_tiny_tokenizer(
    model: Any, folder: Path, tiny_dir: Path, mutate: Callable[[object], None] | None = None
) -> Path:
    """Save ``model`` (changed by ``mutate`` first) to ``folder`` with the tiny tokenizer."""
    import torch

    if mutate is not None:
        with torch.no_grad():
            mutate(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def opt350m_like(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """Shaped like opt-350m: post-LayerNorm, word_embed_proj_dim < hidden_size."""
    return save_fixture_model(
        tmp_path_factory.mktemp("opt350m-like"),
        tiny_dir,
        do_layer_norm_before=False,
        word_embed_proj_dim=16,
    )


@pytest.fixture(scope="session")
def make_fixture_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path
) -> Callable[..., Path]:
    """Factory: ``make_fixture_model("name", mutate=None, **config_overrides)`` -> a folder."""

    def make(name: str, mutate: Callable[[object], None] | None = None, **overrides: object):
        return save_fixture_model(tmp_path_factory.mktemp(name), tiny_dir, mutate, **overrides)

    return make


#: Tiny configs of every non-OPT family the fixtures build (vocabulary of the tiny
#: tokenizer; sizes small enough for a test and large enough for 8-bit on the CPU).
FAMILY_FIXTURES: dict[str, dict[str, object]] = {
    # GQA (4 query heads share 2 key/value heads), untied head
    "llama-gqa": {"model_type": "llama", "num_key_value_heads": 2, "tie_word_embeddings": False},
    # no GQA, tied head
    "llama-tied": {"model_type": "llama", "num_key_value_heads": 4, "tie_word_embeddings": True},
    "mistral": {"model_type": "mistral", "num_key_value_heads": 2, "tie_word_embeddings": False},
    # Qwen2's q/k/v biases, tied head as Qwen2.5-0.5B
    "qwen2": {"model_type": "qwen2", "num_key_value_heads": 2, "tie_word_embeddings": True},
    # q_norm and k_norm per head (head_dim given: Qwen3Config's default is 128)
    "qwen3": {"model_type": "qwen3", "num_key_value_heads": 2, "head_dim": 8},
    "gpt2": {"model_type": "gpt2"},
    # 64 wide: bitsandbytes' CPU NF4 needs every 4-bit layer's input at least 64 wide
    "llama-wide": {"model_type": "llama", "num_key_value_heads": 2, "hidden_size": 64},
    "gpt2-wide": {"model_type": "gpt2", "n_embd": 64},
}


def fixture_config(kind: str) -> object:
    """The transformers config of fixture ``kind`` (a key of FAMILY_FIXTURES)."""
    from transformers import AutoConfig

    settings = dict(FAMILY_FIXTURES[kind])
    model_type = str(settings.pop("model_type"))
    ids = {"pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2, "vocab_size": 512}
    if model_type == "gpt2":
        sizes = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}
        sizes |= {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    else:
        sizes = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
        }
    return AutoConfig.for_model(model_type, **(ids | sizes | settings))


def save_family_model(
    folder: Path, tiny_dir: Path, kind: str, mutate: Callable[[object], None] | None = None
) -> Path:
    """Write a random-weight checkpoint of fixture ``kind`` with the tiny tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(fixture_config(kind)).eval()
    save_with_tiny_tokenizer(model, folder, tiny_dir, mutate)
    # The same tokenizer serialised whole too: AutoTokenizer reads only tokenizer.json for
    # some model types (mistral), as real checkpoints of theirs ship it.
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_dir).backend_tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="session")
def family_model(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Callable[..., Path]:
    """Factory: ``family_model("llama-gqa")`` -> a saved checkpoint folder, built once."""
    cache: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = save_family_model(tmp_path_factory.mktemp(kind), tiny_dir, kind)
        return cache[kind]

    return make
