"""Fuzzed text through the library and the CLI: a result or one clean line, never a traceback."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optinspect.analyses.trace import iter_trace
from optinspect.errors import OptinspectError


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=60))
def test_any_text_traces_or_fails_cleanly(load_tiny, text: str) -> None:
    model = load_tiny("none")
    try:
        (result,) = iter_trace(model, [text], layers="0")
    except OptinspectError as e:
        assert e.exit_code == 2
        assert "\n" not in str(e)
        return
    assert result.tokens[0].id == 2
    assert len(result.modules) == 11


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=40).filter(lambda t: t != "-"))  # "-" means stdin
def test_any_text_through_the_cli_never_shows_a_traceback(cli, text: str) -> None:
    # TEXT comes last: a text that looks like an option (--quant) then has no value to take
    # from the options after it, which would leave the text out and the model unnamed.
    result = cli("trace", "--model", "tiny", "-q", "none", "-f", "json", "--layer", "-1", text)
    assert "Traceback" not in result.err
    if result.code == 0:
        assert json.loads(result.out)["text"] == text
    else:
        assert result.code == 2 and result.err.startswith("Error: ")
        # One line, plus a pointer to --help when the parser refused it (e.g. "-x"); that
        # pointer is click's text, so only its mention of --help is checked.
        lines = result.err.splitlines()
        assert len(lines) == 1 or (len(lines) == 2 and "--help" in lines[1])
