"""The Python API: one function per command, each giving what the command's ``--format
json`` prints (to float32 rounding), shown in a notebook as text, HTML and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import optinspect as oi
from conftest import TINY, assert_same, json_of
from optinspect.errors import UsageError

SENTENCE = "The quick brown fox jumps"
#: The tiny model's ``--quant none`` on the CPU, as the CLI loads it with TINY.
Load = Callable[..., Any]


def test_every_command_has_its_function() -> None:
    import optinspect.api
    from optinspect.cli import app

    commands = {command.name for command in app.registered_commands} - {"serve"}
    functions = set(optinspect.api.__all__) - {"load"}
    assert commands == functions, commands ^ functions
    assert functions <= set(oi.__all__)


CALLS: list[tuple[str, Callable[[Any], Any], tuple[str, ...]]] = [
    ("lens", lambda m: oi.lens(m, SENTENCE, top_k=2, layer="0,-1"), ("-k", "2", "-l", "0,-1")),
    ("compare", lambda m: oi.compare(m, SENTENCE, layer=1, tolerance=0.01), ("-l", "1")),
    ("outliers", lambda m: oi.outliers(m, SENTENCE, threshold=2.0), ("--threshold", "2")),
    ("attention", lambda m: oi.attention(m, SENTENCE, layer=1, head=2), ("-l", "1", "--head", "2")),
    ("trace", lambda m: oi.trace(m, SENTENCE, layer="all", filters="*.fc1"), ("-l", "all")),
]


@pytest.mark.parametrize(("command", "call", "args"), CALLS, ids=[c[0] for c in CALLS])
def test_each_function_returns_what_its_command_prints(
    cli, load_tiny: Load, command: str, call: Callable[[Any], Any], args: tuple[str, ...]
) -> None:
    shown = call(load_tiny("none"))
    more = {"compare": ("-t", "0.01"), "trace": ("--filter", "*.fc1")}.get(command, ())
    printed = json_of(cli, command, SENTENCE, *TINY, *args, *more)
    assert_same(printed, shown.json_data())
    assert_same(printed, shown._repr_mimebundle_(include=["application/json"])["application/json"])


def test_a_list_holds_one_result_per_sentence_in_order(load_tiny: Load) -> None:
    texts = ["Hello world", SENTENCE, "a"]
    for shown in (oi.lens(load_tiny("none"), texts), oi.trace(load_tiny("none"), texts)):
        assert isinstance(shown, list)
        assert [(r.index, r.text) for r in shown] == list(enumerate(texts))
        assert shown.json_data()["results"] == shown.as_dicts()


def test_file_gives_one_sentence_per_line(load_tiny: Load, tmp_path: Path) -> None:
    texts = ["Hello world", SENTENCE]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    from_file = oi.lens(load_tiny("none"), file=tmp_path / "in.txt")
    assert from_file.as_dicts() == oi.lens(load_tiny("none"), texts).as_dicts()


def test_calibrate_writes_and_returns_what_its_command_does(
    cli, load_tiny: Load, tmp_path: Path
) -> None:
    samples = tmp_path / "samples.txt"
    samples.write_text("The quick brown fox\nHello world\nA third line here\n")
    shown = oi.calibrate(load_tiny("none"), file=samples, act_scales=tmp_path / "api.pt")
    printed = json_of(cli, "calibrate", "--file", str(samples), *TINY)
    assert_same(printed, shown.as_dict())
    assert (tmp_path / "api.pt").stat().st_size > 0
    with pytest.raises(UsageError, match="exists: use --force"):
        oi.calibrate(load_tiny("none"), ["x"], act_scales=tmp_path / "api.pt")


def test_params_and_tree_read_a_name_or_a_loaded_model(cli, load_tiny: Load) -> None:
    model = load_tiny("none")
    printed = json_of(cli, "params", "--model", "tiny", "--by", "layer")
    assert (
        oi.params("tiny", by="layer").as_dict() == printed == oi.params(model, by="layer").as_dict()
    )
    measured = json_of(cli, "params", *TINY, "--loaded")
    assert oi.params(model, loaded=True).as_dict() == measured
    printed = json_of(cli, "tree", "--model", "tiny", "--depth", "2", "--no-collapse")
    assert oi.tree(model, depth=2, collapse=False).as_dict() == printed
    assert oi.tree("tiny", depth=2, collapse=False).as_dict() == printed


def test_a_result_reads_through_to_its_record(load_tiny: Load) -> None:
    (result,) = oi.trace(load_tiny("none"), SENTENCE, layer=0)
    from optinspect.results.trace import TraceResult

    assert isinstance(result.record, TraceResult)
    assert result.modules is result.record.modules
    assert result.first_nonfinite() is None
    assert result == result.record
    assert "modules" in dir(result)
    with pytest.raises(AttributeError):
        result.no_such_field  # noqa: B018


def test_the_text_form_is_the_table_the_command_prints(cli, load_tiny: Load) -> None:
    from optinspect.render.notebook import page_text

    for command, shown in (
        ("lens", oi.lens(load_tiny("none"), SENTENCE, top_k=3)),
        ("trace", oi.trace(load_tiny("none"), SENTENCE, layer="0")),
    ):
        args = ("-l", "0") if command == "trace" else ("-k", "3")
        printed = cli(command, SENTENCE, *TINY, *args).out  # 200 columns (conftest)
        assert page_text(shown.pages(), width=200) == printed
        text = shown._repr_mimebundle_(include=["text/plain"])["text/plain"]
        assert text == str(shown)
        assert max(len(line) for line in text.splitlines()) <= 100


def test_a_bundle_holds_only_what_is_asked(load_tiny: Load) -> None:
    shown = oi.params(load_tiny("none"))
    assert set(shown._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    bundle = shown._repr_mimebundle_(exclude=["text/html", "text/plain"])
    assert bundle == {"application/json": shown.as_dict()}
    json.dumps(bundle)  # a notebook stores it as JSON


def test_attention_switches_the_model_back(load_tiny: Load) -> None:
    model = load_tiny("none")
    before = model.model.config._attn_implementation
    assert before != "eager"  # otherwise this test proves nothing
    shown = oi.attention(model, SENTENCE, layer=-1)
    assert shown.layer == model.num_layers - 1
    assert model.model.config._attn_implementation == before
    with pytest.raises(UsageError, match="head 99"):
        oi.attention(model, SENTENCE, head=99)
    assert model.model.config._attn_implementation == before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: oi.trace(m, SENTENCE, layer=9), "layer 9 does not exist"),
        (lambda m: oi.trace(m, SENTENCE, layer=0, layers=[0]), "layer= or layers="),
        (lambda m: oi.lens(m, "   "), "the text is empty"),
        (lambda m: oi.lens(m, SENTENCE, file="x.txt"), "not both"),
        (lambda m: oi.outliers(m, []), "no sentences"),
        (lambda m: oi.params("tiny", loaded=True), "pass what load returns"),
        (lambda m: oi.params(m, by="nothing"), "unknown breakdown"),
        (lambda m: oi.tree(m, depth=-1), "--depth must be 0 or more"),
        (lambda m: oi.compare(m, SENTENCE, against="8bit", against_dtype="float32"), "float32"),
        (lambda m: oi.calibrate(m, ["x"], field="text"), "give file= too"),
    ],
)
def test_bad_arguments_raise_the_commands_errors(
    load_tiny: Load, call: Callable[[Any], Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        call(load_tiny("none"))


def test_compare_loads_the_reference_for_the_call(load_tiny: Load) -> None:
    model = load_tiny("8bit")
    (shown,) = oi.compare(model, SENTENCE, against="none")
    assert (shown.setting.quant, shown.reference.quant) == ("8bit", "none")
    assert all(row.cosine is None or row.cosine > 0.9 for row in shown.modules)


def test_report_is_the_commands_and_saves_one_page(cli, load_tiny: Load, tmp_path: Path) -> None:
    import re

    shown = oi.report(load_tiny("none"), SENTENCE, top_k=2, role="fc2")
    assert_same(
        json_of(cli, "report", SENTENCE, *TINY, "--top-k", "2", "--role", "fc2"), shown.as_dict()
    )
    assert shown.lens.top_k == 2  # the record's parts, read through
    path = shown.save(tmp_path / "fox.html")
    page = path.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    embedded = re.search(
        r'<script type="application/json" id="optinspect-data">(.*?)</script>', page, re.S
    )
    assert embedded is not None
    assert json.loads(embedded.group(1)) == json.loads(json.dumps(shown.as_dict()))
    with pytest.raises(UsageError, match="exists"):
        shown.save(path)
    assert shown.save(path, force=True) == path
    with pytest.raises(UsageError, match=r"\.html"):
        shown.save(tmp_path / "fox.txt")
    bundle = shown._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", "application/json"}
    assert "<script" not in bundle["text/html"]  # a notebook cell runs none


def test_every_public_name_resolves() -> None:
    import optinspect
    import optinspect.api

    assert set(optinspect.api.__all__) == set(optinspect.API)
    for name in optinspect.__all__:
        assert getattr(optinspect, name) is not None, name
