"""The CLI in a real pseudo-terminal, the way a person runs it: ``python -m optinspect``
with a terminal of 80, 120 or 200 columns on one of its streams.

(a) stdout redirected to a file, stderr the terminal: the progress display draws on the
    terminal, the data goes whole to the file, and none of it reaches the terminal.
(b) stderr redirected to a file, stdout the terminal: tables are drawn at the terminal's
    width, and no line is wider than the terminal and no cell is cut short.

Every CLI start imports torch (several seconds), so each case is one subprocess, all
started together by a module fixture and run a few at a time; a test waits for its own.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BOX, NUMBER

termios = pytest.importorskip("termios")
fcntl = pytest.importorskip("fcntl")
pty = pytest.importorskip("pty")

# ~30 subprocesses of several seconds each: minutes on two cores.
pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ("--model", "tiny", "-q", "none")
WIDTHS = (80, 120, 200)
TIMEOUT_S = 300

#: (a)'s input: a blank line (skipped), a comma (CSV quoting) and non-ASCII text.
SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog",
    "The capital of France is",
    "Ça va — très bien, merci",
    "One more line, with a comma",
]
#: (b)'s input: two sentences, so commands draw their per-sentence rule.
TABLE_SENTENCES = ["Hello world", "The quick brown fox"]

#: Terminal escapes: CSI (colour, cursor), OSC (titles, links) and charset selection.
ANSI = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[()][0-9A-Za-z]"
)
#: A frame of rich's "dots" spinner: one braille pattern.
SPINNER = "[\u2800-\u28ff]"


@dataclass(frozen=True)
class TerminalRun:
    code: int
    terminal: str  # what the terminal received, escapes stripped, line ends as "\n"
    raw: str  # what the terminal received, as sent
    redirected: str  # the stream that went to a file

    @property
    def lines(self) -> list[str]:
        return self.terminal.split("\n")


def run_in_terminal(
    args: tuple[str, ...],
    *,
    columns: int,
    tty: str,
    folder: Path,
    name: str = "run",
    env_extra: dict[str, str] | None = None,
) -> TerminalRun:
    """Run ``python -m optinspect *args`` with ``tty`` ("stdout" or "stderr") on a
    pseudo-terminal ``columns`` wide and the other stream redirected to a file."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    assert os.isatty(slave)
    env = dict(os.environ)
    # conftest sets COLUMNS=200 for in-process runs; rich must read the real size instead.
    for variable in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(variable, None)
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", TERM="xterm-256color")
    env.update(env_extra or {})
    redirect = folder / f"{name}-{columns}.{'stderr' if tty == 'stdout' else 'stdout'}"
    with redirect.open("wb") as file:
        stdout, stderr = (slave, file) if tty == "stdout" else (file, slave)
        # stdin is no terminal: the width must come from the stream the output goes to.
        child = subprocess.Popen(
            [sys.executable, "-m", "optinspect", *args],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=folder,
            start_new_session=True,
        )  # fmt: skip
    os.close(slave)
    try:
        raw = _drain(master, child)
    finally:
        os.close(master)
    text = raw.decode("utf-8", errors="replace")
    # The terminal's line discipline turns "\n" into "\r\n"; a lone "\r" (a redrawn
    # progress line) starts a new piece of text too.
    plain = ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return TerminalRun(child.returncode, plain, text, redirect.read_text(encoding="utf-8"))


def _drain(master: int, child: subprocess.Popen) -> bytes:
    """Read the terminal until the child exits and closes it: a full pty blocks the child."""
    chunks: list[bytes] = []
    deadline = _now() + TIMEOUT_S
    while True:
        remaining = deadline - _now()
        if remaining <= 0:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            pytest.fail(f"optinspect did not finish within {TIMEOUT_S} s")
        ready, _, _ = select.select([master], [], [], min(remaining, 1.0))
        if not ready:
            if child.poll() is not None and not _pending(master):
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError as e:  # EIO: every copy of the slave end is closed
            if e.errno == errno.EIO:
                break
            raise
        if not data:
            break
        chunks.append(data)
    child.wait(timeout=TIMEOUT_S)
    return b"".join(chunks)


def _pending(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _now() -> float:
    return time.monotonic()


# --- the cases ---------------------------------------------------------------------------


def _texts(documents: list[dict]) -> list[str]:
    return [d["text"] for d in documents]


def check_jsonl(out: str) -> None:
    documents = [json.loads(line) for line in out.splitlines()]
    assert _texts(documents) == SENTENCES
    assert [d["index"] for d in documents] == list(range(len(SENTENCES)))


def check_json_results(out: str) -> None:
    document = json.loads(out)
    assert _texts(document["results"]) == SENTENCES
    assert [d["index"] for d in document["results"]] == list(range(len(SENTENCES)))


def check_csv(out: str) -> None:
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows, "no rows"
    # --layer all on tiny: 4 layers of 11 modules, every sentence in order.
    by_index: dict[str, set[str]] = {}
    for row in rows:
        by_index.setdefault(row["sentence"], set()).add(row["text"])
    assert list(by_index) == [str(i) for i in range(len(SENTENCES))]
    assert [texts.pop() for texts in by_index.values()] == SENTENCES
    assert len(rows) == len(SENTENCES) * 4 * 11


def check_outliers_json(out: str) -> None:
    document = json.loads(out)
    assert document["sentences"] == len(SENTENCES)
    assert document["modules"]


@dataclass(frozen=True)
class DataCase:
    args: tuple[str, ...]
    columns: int
    label: str  # what the progress counter says
    check: Callable[[str], None]


#: (a): the data formats, spread over the three widths rather than multiplied by them.
DATA_CASES = {
    "trace-jsonl": DataCase(("trace", "-f", "jsonl"), 80, "tracing", check_jsonl),
    "trace-json": DataCase(("trace", "-f", "json", "--layer", "0"), 120, "tracing",
                           check_json_results),
    "trace-csv": DataCase(("trace", "-f", "csv", "--layer", "all"), 200, "tracing", check_csv),
    "lens-jsonl": DataCase(("lens", "-f", "jsonl", "--top-k", "2"), 80, "lens", check_jsonl),
    "compare-json": DataCase(("compare", "-f", "json"), 120, "comparing", check_json_results),
    "outliers-json": DataCase(("outliers", "-f", "json"), 200, "inspecting",
                              check_outliers_json),
}  # fmt: skip

#: (b): every command that draws tables; those reading --file draw a rule per sentence.
TABLE_CASES = {
    "trace-layer0": ("trace", "--file", "two.txt", *TINY, "--layer", "0"),
    "trace-overview": ("trace", "--file", "two.txt", *TINY),
    "lens": ("lens", "--file", "two.txt", *TINY, "--top-k", "3"),
    "compare": ("compare", "--file", "two.txt", *TINY),
    "outliers": ("outliers", "--file", "two.txt", *TINY),
    "params": ("params", "--model", "facebook/opt-125m", "--by", "module"),
    "tree": ("tree", "--model", "tiny"),
}
RULED = {"trace-layer0", "trace-overview", "lens", "compare"}


def _data_args(case: DataCase) -> tuple[str, ...]:
    command, *rest = case.args
    return (command, "--file", "sentences.txt", *TINY, "-b", "2", *rest)


def _wanted(session: pytest.Session) -> list[tuple[str, str, int]]:
    """The runs the selected tests of this module need, so ``-k`` starts no others."""
    keys: list[tuple[str, str, int]] = []
    for item in session.items:
        if getattr(item, "module", None) is None or item.module.__name__ != __name__:
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "data_case" in params:
            name = params["data_case"]
            keys.append(("stderr", name, DATA_CASES[name].columns))
        elif "table_case" in params:
            widths = [params["width"]] if "width" in params else list(WIDTHS)
            keys += [("stdout", params["table_case"], w) for w in widths]
    return list(dict.fromkeys(keys))


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str, int], Future[TerminalRun]]]:
    folder = tmp_path_factory.mktemp("terminal")
    (folder / "sentences.txt").write_text(
        SENTENCES[0] + "\n\n" + "\n".join(SENTENCES[1:]) + "\n", encoding="utf-8"
    )
    (folder / "two.txt").write_text("\n".join(TABLE_SENTENCES) + "\n", encoding="utf-8")
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: dict[tuple[str, str, int], Future[TerminalRun]] = {}
        for tty, name, columns in _wanted(request.session):
            args = TABLE_CASES[name] if tty == "stdout" else _data_args(DATA_CASES[name])
            futures[(tty, name, columns)] = pool.submit(
                run_in_terminal, args, columns=columns, tty=tty, folder=folder, name=name
            )
        yield futures
        for future in futures.values():
            future.cancel()


# --- (a) data to a file, progress on the terminal -----------------------------------------------


@pytest.mark.parametrize("data_case", list(DATA_CASES))
def test_redirected_data_is_whole_and_the_terminal_shows_only_progress(
    runs, data_case: str
) -> None:
    case = DATA_CASES[data_case]
    run = runs[("stderr", data_case, case.columns)].result()
    assert run.code == 0, run.terminal
    case.check(run.redirected)
    assert "\x1b" not in run.redirected  # a file gets no colour or cursor codes

    check_progress(run, case.label)


def check_progress(run: TerminalRun, label: str, *, loads: bool = True) -> None:
    """The terminal holds only the loading spinner (when the model loads here) and the
    sentence counter, which counts up to the file's 5 sentences: every piece of text
    drawn on it is one of those, and the counter drew at least once."""
    # (Pieces are split at each spinner glyph: two displays may share a line, which
    # test_one_live_display_at_a_time checks; here the question is what was drawn.)
    # Done, the counter's spinner gives way to a blank: "tracing 5/5".
    counter = rf"(?:{SPINNER} )?{label} \d+/{len(SENTENCES)}"
    loading = rf"{SPINNER} loading tiny \(none\)|" if loads else ""
    allowed = re.compile(loading + counter)
    pieces = [
        part.strip()
        for piece in run.lines
        for part in re.split(rf"(?={SPINNER} )", piece)
        if part.strip()
    ]
    strays = [piece for piece in pieces if not allowed.fullmatch(piece)]
    assert strays == [], f"data or noise on the terminal: {strays[:5]}"
    assert any(re.fullmatch(counter, piece) for piece in pieces), pieces
    # The spinner and the counter hide the cursor while they draw: it must come back.
    assert run.raw.count("\x1b[?25l") == run.raw.count("\x1b[?25h") > 0


def test_the_counter_shows_the_total_through_a_server_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server in this process, in a runtime folder of this test's own; the command in
    # the terminal finds it there. The file's total is known: the counter says n/5.
    import tempfile

    from optinspect.commands.options import LoadOptions
    from optinspect.serve.place import private_dir, socket_path
    from optinspect.serve.server import ModelServer

    runtime = tempfile.mkdtemp(prefix="oi-")  # short: socket paths have a length limit
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    private_dir(create=True)
    load = LoadOptions(model="tiny", quant="none")
    server = ModelServer(socket_path(), load, load.load(), idle=None)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    try:
        args = ("trace", "--file", "sentences.txt", *TINY, "-b", "2", "-f", "jsonl")
        run = run_in_terminal(args, columns=80, tty="stderr", folder=tmp_path, name="served")
    finally:
        server.stop("test over")
        thread.join(timeout=30)
    assert run.code == 0, run.terminal
    assert server.served == 1, "the server did not answer"
    check_jsonl(run.redirected)
    check_progress(run, "tracing", loads=False)


@pytest.mark.parametrize("data_case", DATA_CASES)
def test_one_live_display_at_a_time(runs, data_case: str) -> None:
    # Every line drawn on the terminal shows one display: the spinner or the counter.
    run = runs[("stderr", data_case, DATA_CASES[data_case].columns)].result()
    shared = [line for line in run.lines if len(re.findall(SPINNER, line)) > 1]
    assert shared == []


# --- (b) tables on the terminal ------------------------------------------------------------


def table_lines(run: TerminalRun) -> list[str]:
    return [line for line in run.lines if BOX & set(line)]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("table_case", list(TABLE_CASES))
def test_tables_fit_the_terminal_without_cutting_a_cell(runs, table_case: str, width: int) -> None:
    from rich.cells import cell_len

    run = runs[("stdout", table_case, width)].result()
    assert run.code == 0, run.redirected
    assert run.redirected == ""  # no spinner or progress on a redirected stderr
    lines = table_lines(run)
    assert lines, run.terminal
    too_wide = [line for line in lines if cell_len(line) > width]
    assert too_wide == [], f"{len(too_wide)} lines wider than {width}: {too_wide[0]!r}"
    cut = [line for line in lines if "…" in line]
    assert cut == [], f"cut cells: {cut[0]!r}"
    if table_case in RULED:
        # The rule above each sentence spans the whole terminal: rich read its width.
        rules = [line for line in run.lines if line.startswith("sentence 0 ─")]
        assert [cell_len(rule) for rule in rules] == [width]


@pytest.mark.parametrize("table_case", list(TABLE_CASES))
def test_every_number_is_whole_at_every_width(runs, table_case: str) -> None:
    # Cells may wrap or tables stack at a narrow terminal, but no number may be cut,
    # cropped or split: the numbers in the tables are the same at every width.
    numbers = {}
    for width in WIDTHS:
        lines = table_lines(runs[("stdout", table_case, width)].result())
        numbers[width] = set(NUMBER.findall("\n".join(lines)))
    assert numbers[WIDTHS[0]], "no numbers found"
    for width in WIDTHS[1:]:
        assert numbers[width] == numbers[WIDTHS[0]], (
            f"{width} columns: {sorted(numbers[width] ^ numbers[WIDTHS[0]])[:10]}"
        )


# --- (c) tables piped while stderr is the terminal ----------------------------------------------

#: A table 105 columns wide at its natural size, and no torch to import.
PIPED = ("params", "--model", "facebook/opt-125m", "--by", "layer")


def widest_table_line(text: str) -> int:
    from rich.cells import cell_len

    return max(cell_len(line) for line in text.splitlines() if BOX & set(line))


@pytest.mark.parametrize("width", [80, 120])
def test_piped_tables_take_the_width_of_the_terminal_on_stderr(tmp_path: Path, width: int) -> None:
    # `optinspect params --by layer | head` in a terminal: stdout is a pipe and bash does
    # not export COLUMNS, but the reader is at the terminal that stderr still is.
    run = run_in_terminal(PIPED, columns=width, tty="stderr", folder=tmp_path)
    assert run.code == 0, run.terminal
    assert widest_table_line(run.redirected) <= width
    assert widest_table_line(run.redirected) > width - 20  # laid out for it, not narrower


def test_columns_wins_over_the_terminal_on_stderr(tmp_path: Path) -> None:
    run = run_in_terminal(
        PIPED, columns=80, tty="stderr", folder=tmp_path, env_extra={"COLUMNS": "120"}
    )
    assert run.code == 0, run.terminal
    assert 80 < widest_table_line(run.redirected) <= 120


def test_tables_to_a_file_without_a_terminal_are_laid_out_200_wide(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "optinspect", *PIPED],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
        start_new_session=True,  # no controlling terminal to read a size from
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert widest_table_line(done.stdout) == 105  # one block at its natural width: under 200
