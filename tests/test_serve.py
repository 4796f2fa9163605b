"""``optinspect serve``: the output through a server is the local output, byte for byte;
the server is private, queues, cancels, survives failures, and goes away cleanly.

Most tests run a server in a thread of this process (the model loads once); the
``slow`` ones start the real ``optinspect serve`` in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from optinspect.analyses.job import Job
from optinspect.commands.options import LoadOptions
from optinspect.serve import wire
from optinspect.serve.client import find_server, job_message, request
from optinspect.serve.place import private_dir, socket_path

SENTENCES = ["The quick brown fox jumps over the lazy dog", "Hello world", "A third, shorter one"]


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


def start_server(load: LoadOptions, idle: float | None = None) -> tuple[object, threading.Thread]:
    from optinspect.serve.server import ModelServer

    private_dir(create=True)
    server = ModelServer(socket_path(), load, load.load(), idle=idle)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    """tiny with the default settings (8bit, auto), served from a thread of this process."""
    served, thread = start_server(LoadOptions(model="tiny"))
    yield served
    served.stop("tests over")  # type: ignore[attr-defined]
    thread.join(timeout=30)
    assert not socket_path().exists()


def _cases(sentences: Path) -> list[list[str]]:
    file = ["--file", str(sentences)]
    text = ["Hello world", "--model", "tiny"]
    cases = [["trace", *text, "--format", f] for f in ("table", "json", "jsonl", "csv")]
    trace_file = ["trace", *file, "--model", "tiny", "--layer", "0"]
    cases += [[*trace_file, "--format", f] for f in ("table", "json", "csv")]
    cases += [["lens", *text, "--format", f, "--top-k", "2"] for f in ("table", "json", "jsonl")]
    cases += [["lens", *file, "--model", "tiny", "--format", "json"]]
    cases += [["attention", *text, "--format", f, "--layer", "0"] for f in ("table", "json")]
    cases += [["attention", *text, "--head", "1"]]
    cases += [["compare", *text, "--format", f] for f in ("table", "json", "jsonl")]
    cases += [["compare", *file, "--model", "tiny", "--format", "jsonl", "--layer", "all"]]
    cases += [["outliers", *file, "--model", "tiny", "--format", f] for f in ("table", "json")]
    calibrate = ["calibrate", *file, "--model", "tiny", "--quant", "8bit"]
    cases += [[*calibrate, "--format", f] for f in ("table", "json")]
    cases += [["params", "--model", "tiny", "--loaded", "--format", f] for f in ("table", "json")]
    cases += [
        ["trace", *text, "--format", "html"],
        ["lens", *file, "--model", "tiny", "-f", "html"],
        ["outliers", *file, "--model", "tiny", "-f", "html"],
        [*calibrate, "--format", "html"],
    ]
    cases += [["report", *text], ["report", *text, "--compare", "none", "--layer", "0"]]
    return cases


CASE_IDS = [
    *(f"trace-{f}" for f in ("table", "json", "jsonl", "csv")),
    *(f"trace-file-{f}" for f in ("table", "json", "csv")),
    *(f"lens-{f}" for f in ("table", "json", "jsonl")),
    "lens-file-json",
    *(f"attention-{f}" for f in ("table", "json")),
    "attention-head",
    *(f"compare-{f}" for f in ("table", "json", "jsonl")),
    "compare-file-jsonl",
    *(f"outliers-{f}" for f in ("table", "json")),
    *(f"calibrate-{f}" for f in ("table", "json")),
    *(f"params-loaded-{f}" for f in ("table", "json")),
    "trace-html",
    "lens-file-html",
    "outliers-file-html",
    "calibrate-html",
    "report-json",
    "report-compare",
]


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_output_through_the_server_is_the_local_output(cli, server, sentences, case) -> None:
    args = _cases(sentences)[case]
    before = server.served
    served = cli(*args)
    assert server.served == before + 1, "the server did not answer"
    local = cli(*args, "--no-server")
    assert server.served == before + 1, "--no-server reached the server"
    assert served.code == local.code == 0, served.err + local.err
    assert served.out == local.out
    assert served.out.strip()


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "Hello", "--model", "tiny", "--layer", "99"],
        ["trace", "Hello", "--model", "tiny", "--filter", "nothing.*"],
        ["lens", "Hello", "--model", "tiny", "--top-k", "0"],
        ["attention", "Hello", "--model", "tiny", "--head", "9"],
        ["outliers", "--file", "/dev/null", "--model", "tiny"],  # outliers need sentences
        ["trace", "abc\udcff", "--model", "tiny", "--format", "csv"],  # argv's abc\xff
    ],
    ids=["layer", "filter", "top-k", "head", "empty-outliers", "not-utf8"],
)
def test_errors_through_the_server_are_the_local_errors(cli, server, args) -> None:
    served = cli(*args)
    local = cli(*args, "--no-server")
    assert served.code == local.code == 2
    assert served.err == local.err
    assert served.err.startswith("Error: ") and served.err.count("\n") == 1


def test_invalid_utf8_text_through_the_server_is_the_local_error(server) -> None:
    # Real processes, so TEXT arrives as the bytes a shell passes: told before any job
    # is sent, where the frame's UTF-8 encoding used to fail (exit 1, UnicodeEncodeError).
    before = server.served
    for extra in ([], ["--no-server"]):
        proc = subprocess.run(
            [sys.executable, "-m", "optinspect", "trace", b"abc\xff", "--model", "tiny",
             "--format", "csv", *extra],
            capture_output=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            2,
            b"",
            b"Error: the text is not valid UTF-8 (byte 4)\n",
        ), extra
    assert server.served == before  # no job was sent


def test_files_written_through_the_server_match(cli, server, sentences, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    outputs = {}
    files: dict[str, list[bytes]] = {}
    for where, extra in (("served", []), ("local", ["--no-server"])):
        save = tmp_path / f"{where}.safetensors"
        r = cli("trace", "--file", str(sentences), "--model", "tiny", "--layer", "0",
                "--save", str(save), "--format", "json", *extra)  # fmt: skip
        assert r.code == 0, r.err
        scales = tmp_path / f"{where}-scales.pt"
        out = tmp_path / f"{where}-stats.safetensors"
        r = cli("calibrate", "--file", str(sentences), "--model", "tiny", "--quant", "8bit",
                "--act-scales", str(scales), "--out", str(out), *extra)  # fmt: skip
        assert r.code == 0, r.err
        assert r.err == f"wrote {scales}\nwrote {out}\n"
        outputs[where] = (load_file(save), torch.load(scales), stat.S_IMODE(save.stat().st_mode))
        files[where] = [path.read_bytes() for path in (save, scales, out)]
    (saved_a, scales_a, mode_a), (saved_b, scales_b, mode_b) = outputs["served"], outputs["local"]
    assert mode_a == mode_b
    assert saved_a.keys() == saved_b.keys() and scales_a.keys() == scales_b.keys()
    for key in saved_a:
        assert torch.equal(saved_a[key], saved_b[key]), key
    for key in scales_a:
        assert torch.equal(scales_a[key], scales_b[key]), key
    # Byte for byte, too: equal contents once differed from byte 27 on (the order of the
    # metadata), and the .pt archives by the names of their temporary files.
    for name, served, local in zip(("save", "act-scales", "out"), *files.values(), strict=True):
        assert served == local, name


def test_notes_through_the_server_are_the_local_notes(cli, server, tmp_path) -> None:
    long = " ".join(["word"] * 300)  # 601 tokens and </s>; tiny takes 128
    save = tmp_path / "cut.safetensors"
    before = server.served
    served = cli("trace", long, "--model", "tiny", "--truncate", "--layer", "0", "-f", "json",
                 "--save", str(save))  # fmt: skip
    assert server.served == before + 1
    save.unlink()
    local = cli("trace", long, "--model", "tiny", "--truncate", "--layer", "0", "-f", "json",
                "--save", str(save), "--no-server")  # fmt: skip
    assert served.code == local.code == 0, served.err + local.err
    assert (
        served.err
        == local.err
        == (f"note: the text has 602 tokens; --truncate kept the first 128\nwrote {save}\n")
    )


def test_socket_and_folder_are_private(server) -> None:
    assert stat.S_IMODE(os.stat(socket_path().parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(socket_path()).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(socket_path()).st_mode)


def test_a_client_of_another_uid_is_refused(server, monkeypatch) -> None:
    import optinspect.serve.server as server_module

    monkeypatch.setattr(server_module, "peer_uid", lambda sock: os.getuid() + 1)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(socket_path()))
    with sock:
        answer = wire.receive(sock)
        assert answer == {"error": "refused: the server answers its own user only"}
        assert wire.receive(sock) is None  # and the connection is closed
    assert find_server(LoadOptions(model="tiny")) is None


def test_a_server_of_another_model_is_not_used(cli, server) -> None:
    before = server.served
    r = cli("trace", "Hello", "--model", "tiny", "--quant", "none", "--format", "json")
    assert r.code == 0 and json.loads(r.out)["quant"] == "none"
    assert server.served == before
    assert r.err == ""


def test_two_clients_at_once_are_both_answered(cli, server) -> None:
    texts = ["First client's sentence", "The second client asks this"]
    local = [cli("lens", t, "--model", "tiny", "--format", "json", "--no-server") for t in texts]
    expected = [r.out for r in local]
    before = server.served
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "optinspect", "lens", t, "--model", "tiny", "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in texts
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out for out, _err in outputs] == expected
    assert server.served == before + 2


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "Hello world", "--format", "json"],
        ["lens", "Hello world", "--format", "json"],
        ["attention", "Hello world", "--format", "json"],
        ["compare", "Hello world", "--format", "json"],
        ["outliers", "Hello world", "--format", "json"],
        ["calibrate", "Hello world", "--quant", "8bit", "--format", "json"],
        ["params", "--loaded", "--format", "json"],
    ],
    ids=lambda args: args[0],
)
def test_the_client_path_imports_no_torch(server, args) -> None:
    code = (
        "import sys; from optinspect.cli import run\n"
        f"code = run({[*args, '--model', 'tiny']!r})\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr); sys.exit(code)\n"
    )
    before = server.served
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "HEAVY="
    assert json.loads(proc.stdout)
    assert server.served == before + 1


def test_a_job_the_server_turns_down_runs_here_with_its_input(cli, server, sentences) -> None:
    args = ("trace", "--file", str(sentences), "--model", "tiny", "--format", "jsonl")
    local = cli(*args, "--no-server")
    server.stopping = "testing"  # the server answers the hello, then turns the job down
    try:
        r = cli(*args)
    finally:
        server.stopping = None
    assert r.code == 0 and r.out == local.out and r.out.count("\n") == len(SENTENCES)
    assert r.err == (
        "note: the optinspect server did not run this job (the server is stopping "
        "(testing)); loading here\n"
    )


def test_a_folder_spelled_another_way_from_another_folder_is_served(
    cli, own_runtime, tiny_dir, monkeypatch
) -> None:
    served, thread = start_server(LoadOptions(model=str(tiny_dir), quant="none"))
    try:
        monkeypatch.chdir(tiny_dir.parent)
        args = ("lens", "Hello world", "--model", f"./{tiny_dir.name}/", "--quant", "none")
        r = cli(*args, "--format", "json")
        assert served.served == 1, r.err
        local = cli(*args, "--format", "json", "--no-server")
        assert r.code == local.code == 0 and r.out == local.out
        assert json.loads(r.out)["model"] == f"./{tiny_dir.name}/"
    finally:
        served.stop("test over")
        thread.join(timeout=30)


def test_one_server_per_user(own_runtime) -> None:
    from optinspect.serve.place import claim, lock_dir

    first = claim()
    assert first is not None
    try:
        assert claim() is None
    finally:
        first.release()
    assert not (lock_dir() / "server.lock").exists()  # released, it is removed
    again = claim()
    assert again is not None
    again.release()


def test_turns_are_taken_in_order_of_arrival() -> None:
    from optinspect.serve.server import Turns

    turns, order = Turns(), []
    gate = threading.Event()

    def job(i: int) -> None:
        with turns.turn():
            if i == 0:
                gate.wait(10)
            order.append(i)

    threads = []
    for i in range(6):
        thread = threading.Thread(target=job, args=(i,))
        thread.start()
        threads.append(thread)
        while turns._next <= i:  # each has its ticket before the next thread starts
            time.sleep(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert order == list(range(6))


def test_a_failure_inside_the_server_is_reported_and_the_server_stays_up(
    cli, server, monkeypatch
) -> None:
    import optinspect.analyses.trace

    def broken(*args: object, **kwargs: object) -> Iterator[object]:
        raise RuntimeError("boom\nsecond line")
        yield

    monkeypatch.setattr(optinspect.analyses.trace, "iter_trace", broken)
    r = cli("trace", "Hello", "--model", "tiny")
    assert r.code == 1
    # The server (a thread here) logs the failure on its own stderr, then the client tells it.
    server_log, client = r.err.split("\n", 1)
    assert server_log == "optinspect serve: a job failed: RuntimeError: boom"
    assert client == "Error: RuntimeError: boom\nRun again with --debug for the traceback.\n"
    r = cli("trace", "Hello", "--model", "tiny", "--debug")
    assert "Traceback" in r.err and 'raise RuntimeError("boom' in r.err  # the server's
    monkeypatch.undo()
    r = cli("trace", "Hello", "--model", "tiny", "--format", "json")
    assert r.code == 0, r.err


def hooks_of(model: object) -> dict[str, set[int]]:
    """Every module's forward hooks, by id (transformers keeps its own output-capturing
    hooks once ``output_attentions`` was used: they belong to the model, not to a job)."""
    return {
        name: {*m._forward_hooks, *m._forward_pre_hooks}
        for name, m in model.named_modules()  # type: ignore[attr-defined]
    }


def send_job(job: Job, *, started: bool = True) -> socket.socket:
    """A connection on which ``job`` was sent as a client sends it; with ``started``, once
    the server started it, its sentences go in frames from a thread (the server reads
    them as it runs, so sending them all could wait for the whole job)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(socket_path()))
    wire.send(sock, {"op": "hello", "protocol": __import__("optinspect").__version__,
                     "settings": job.load.settings()})  # fmt: skip
    assert wire.receive(sock)["match"] is True
    wire.send(sock, {"op": "run", "job": job_message(job)})
    if started:
        assert wire.receive(sock) == {"started": True}
        threading.Thread(target=_send_texts, args=(sock, job.texts), daemon=True).start()
    return sock


def hang_up(sock: socket.socket) -> None:
    """Go away as a client process that ends does: a bare ``close`` would leave the
    socket open while the thread of ``send_job`` still waits in sending on it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _send_texts(sock: socket.socket, texts: list[str]) -> None:
    with contextlib.suppress(OSError):  # the test closed the connection
        for start in range(0, len(texts), 100):
            wire.send(sock, {"texts": [[t, None] for t in texts[start : start + 100]]})
        wire.send(sock, {"end": True})


def long_trace() -> Job:
    """A trace job of minutes: many sentences, one forward each."""
    return Job(
        "trace",
        LoadOptions(model="tiny"),
        checks={"batch_size": 1},
        params={
            "layers": None,
            "filters": (),
            "batch_size": 1,
            "truncate": False,
            "summary": False,
            "plot": False,
            "save": None,
        },
        texts=["one sentence of a long corpus"] * 20000,
    )


def test_a_client_that_goes_away_cancels_its_job(server) -> None:
    job = long_trace()
    hooks_before = hooks_of(server.loaded.model)
    sock = send_job(job)
    first = wire.receive(sock)
    assert first is not None and ("progress" in first or "result" in first)
    hang_up(sock)
    deadline = time.monotonic() + 20
    while server.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active == 0, "the job went on after its client left"
    assert hooks_of(server.loaded.model) == hooks_before, "the cancelled job left hooks on"
    assert request("status")["status"]["running"] == 0  # and the server still answers


def test_a_compare_job_is_cancelled_in_its_reference_pass(server) -> None:
    # The reference pass sends no progress: it must look for its client all the same.
    # Its setting is the server's own, so it runs on the resident model.
    job = Job(
        "compare",
        LoadOptions(model="tiny"),
        checks={"batch_size": 1},
        params={
            "setting": ["8bit", "auto"],
            "reference": ["8bit", "auto"],
            "layers": None,
            "filters": (),
            "tolerance": 0.05,
            "batch_size": 1,
            "truncate": False,
        },
        texts=["one sentence of a long corpus"] * 3000,  # minutes of reference forwards
    )
    hooks_before = hooks_of(server.loaded.model)
    sock = send_job(job)
    deadline = time.monotonic() + 20
    while server.active == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1)  # the sentences are read, the reference pass has begun
    hang_up(sock)
    while server.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active == 0, "the reference pass went on after its client left"
    assert hooks_of(server.loaded.model) == hooks_before, "the cancelled job left hooks on"


def test_a_queued_job_is_told_it_waits_once(cli, server) -> None:
    first = send_job(long_trace())
    assert "progress" in wire.receive(first)  # the first job runs

    def let_the_first_go() -> None:  # once the second waits behind it
        deadline = time.monotonic() + 60
        while server.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        hang_up(first)

    closer = threading.Thread(target=let_the_first_go)
    closer.start()
    before = server.served
    r = cli("trace", "Hello world", "--model", "tiny", "--format", "json")
    closer.join()
    assert r.code == 0 and json.loads(r.out)["text"] == "Hello world"
    assert server.served == before + 1
    assert r.err == "waiting for the server: another job is running\n"
    r = cli("trace", "Hello world", "--model", "tiny", "--format", "json")
    assert r.code == 0 and r.err == ""  # alone, it does not wait


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> io.BytesIO:
    raw = io.BytesIO(data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
    return raw


def test_stdin_goes_to_the_server_in_frames_as_it_is_read(cli, server, monkeypatch) -> None:
    import optinspect.serve.client as client

    lines = [f"Sentence number {i} of a long input" for i in range(300)]
    data = ("\n".join(lines) + "\n").encode()
    frames: list[tuple[int, int]] = []  # (sentences in the frame, bytes of stdin read then)
    stdin = feed_stdin(monkeypatch, data)

    def spy(sock: socket.socket, message: dict) -> None:
        if "texts" in message:
            frames.append((len(message["texts"]), stdin.tell()))
        wire.send(sock, message)

    monkeypatch.setattr(client, "send", spy)
    before = server.served
    served = cli("trace", "-", "--model", "tiny", "--format", "jsonl", "-b", "4")
    assert server.served == before + 1
    feed_stdin(monkeypatch, data)
    local = cli("trace", "-", "--model", "tiny", "--format", "jsonl", "-b", "4", "--no-server")
    assert served.code == local.code == 0, served.err + local.err
    assert served.out == local.out and served.out.count("\n") == len(lines)
    assert served.err == ""
    assert sum(n for n, _ in frames) == len(lines)
    assert len(frames) >= len(lines) // client.FRAME_SENTENCES
    assert max(n for n, _ in frames) <= client.FRAME_SENTENCES
    # The client had read at most a frame and a queue of sentences when it sent the
    # first: it does not read the whole input before sending it.
    per_line = len(data) / len(lines)
    assert frames[0][1] <= (2 * client.FRAME_SENTENCES + 2) * per_line < len(data)


def test_a_bad_line_on_stdin_through_the_server_is_told_as_locally(
    cli, server, monkeypatch
) -> None:
    data = "\n".join(["Hello world"] * 10).encode() + b"\nbad \xff line\nnever read\n"
    args = ("trace", "-", "--model", "tiny", "--format", "jsonl", "-b", "2")
    before = server.served
    feed_stdin(monkeypatch, data)
    served = cli(*args)
    assert server.served == before + 1
    feed_stdin(monkeypatch, data)
    local = cli(*args, "--no-server")
    assert served.code == local.code == 2
    assert served.err == local.err == "Error: line 11 of stdin is not valid UTF-8 (byte 5)\n"
    assert served.out == local.out and served.out.count("\n") == 10  # the lines before it


def test_a_client_ends_cleanly_while_its_stdin_is_still_open(server) -> None:
    # The job fails before it reads its input; the thread that reads stdin for the
    # server still waits for a line. Python must not abort at exit over that thread.
    proc = subprocess.Popen(
        [sys.executable, "-m", "optinspect", "trace", "-", "--model", "tiny", "--layer", "99"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdin.write("Hello world\n")
        proc.stdin.flush()
        code = proc.wait(timeout=120)  # stdin stays open
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.stdin.close()
    assert code == 2, err
    assert err.startswith("Error: layer 99 does not exist") and err.count("\n") == 1


def test_status_reports_the_model_and_counts(server) -> None:
    state = request("status")["status"]
    assert state["model"] == "tiny" and state["quant"] == "8bit"
    assert state["resolved"] == {"device": "cpu", "dtype": "float16", "random_weights": True}
    assert state["pid"] == os.getpid() and state["socket"] == str(socket_path())
    assert state["requests"] == server.served and state["memory"]["rss"] > 0


@pytest.fixture
def own_runtime(monkeypatch, tmp_path_factory) -> Path:
    """A runtime folder of this test's own, away from the module's server."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="oi-"))  # short: socket paths have a length limit
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base / "optinspect"


def test_idle_stops_the_server(own_runtime, load_tiny) -> None:
    from optinspect.serve.server import ModelServer

    private_dir(create=True)
    idle = ModelServer(socket_path(), LoadOptions(model="tiny"), load_tiny("8bit"), idle=0.3)
    started = time.monotonic()
    assert idle.serve() == "idle"
    assert 0.3 <= time.monotonic() - started < 10
    assert not socket_path().exists()


def test_a_stale_socket_is_removed_with_one_note(cli, own_runtime) -> None:
    private_dir(create=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path()))  # bound, never listening, then closed: a killed server's
    dead.close()
    r = cli("trace", "Hello world", "--model", "tiny", "--format", "json")
    local = cli("trace", "Hello world", "--model", "tiny", "--format", "json", "--no-server")
    assert r.code == 0 and r.out == local.out
    assert r.err == (
        f"note: the optinspect server is gone (removed its stale socket {socket_path()}); "
        "loading here\n"
    )
    assert not socket_path().exists()


def test_a_folder_others_can_enter_is_not_used(cli, own_runtime) -> None:
    own_runtime.mkdir(mode=0o755)
    os.chmod(own_runtime, 0o755)
    r = cli("trace", "Hello world", "--model", "tiny", "--format", "json")
    assert r.code == 0
    assert r.err == (
        f"note: {own_runtime} can be entered by other users (mode 755): make it 0700 or "
        "remove it; not using a server\n"
    )
    r = cli("serve", "--model", "tiny")
    assert r.code == 2 and "can be entered by other users" in r.err


def test_serve_stop_and_status_without_a_server(cli, own_runtime) -> None:
    for option in ("--stop", "--status"):
        r = cli("serve", option)
        assert r.code == 1
        assert r.err == f"Error: no optinspect server is running (no socket at {socket_path()})\n"


def test_status_and_stop_say_why_they_cannot_ask_a_server(cli, own_runtime, load_tiny) -> None:
    from optinspect.serve.server import ModelServer

    private_dir(create=True)
    running = ModelServer(socket_path(), LoadOptions(model="tiny"), load_tiny("8bit"), idle=None)
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    try:
        os.chmod(own_runtime, 0o750)  # changed after the server started
        for option in ("--status", "--stop"):
            r = cli("serve", option)
            assert (r.code, r.out) == (2, "")
            assert r.err == (
                f"Error: {own_runtime} can be entered by other users (mode 750): make it "
                "0700 or remove it\n"
            )
        assert running.stopping is None  # --stop did not reach it
        os.chmod(own_runtime, 0o700)
        r = cli("serve", "--status", "--format", "json")
        assert r.code == 0 and json.loads(r.out)["pid"] == os.getpid()
    finally:
        running.stop("test over")
        thread.join(timeout=30)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("45", 45.0), ("1.5m", 90.0), ("0", None)],
)
def test_idle_durations(text: str, seconds: float | None) -> None:
    from optinspect.commands.serve import parse_duration

    assert parse_duration(text) == seconds


def test_a_bad_idle_duration_is_a_usage_error(cli, own_runtime) -> None:
    r = cli("serve", "--model", "tiny", "--idle", "soon")
    assert r.code == 2
    assert r.err == "Error: --idle 'soon' is not a duration: give e.g. 90s, 30m, 2h or 0 (never)\n"


def test_the_codec_keeps_what_json_would_lose() -> None:
    from optinspect.results.records import ModelInfo, TensorStats, Token
    from optinspect.results.trace import TraceResult

    stats = TensorStats(mean=math.nan, std=math.inf, min=-math.inf, max=1e-310, absmax=0.1,
                        rms=1 / 3, zeros=3, nan=1, inf=2)  # fmt: skip
    record = {
        "tuple": (1, (2.5, None)),
        "list": [True, "é"],
        "keys": {1: "int key", "s": b"\xe2\x80"},
        "token": Token(id=5, text="\ufffd", bytes="e2"),
        "info": ModelInfo("tiny", "none", "cpu", "float32", random_weights=True),
        "stats": stats,
    }
    back = wire.decode(json.loads(json.dumps(wire.encode(record), allow_nan=False)))
    assert repr(back) == repr(record)
    assert math.isnan(back["stats"].mean) and back["stats"].max == 1e-310
    assert isinstance(back["tuple"], tuple) and isinstance(back["keys"]["s"], bytes)
    with pytest.raises(TypeError, match="cannot send a object"):
        wire.encode(object())
    evil = {"$record": "os:system", "fields": {}}
    with pytest.raises(wire.WireError, match="not a record the client rebuilds"):
        wire.decode(evil)
    assert TraceResult.__module__ == "optinspect.results.trace"


def test_frames_are_length_prefixed_json() -> None:
    a, b = socket.socketpair()
    with a, b:
        wire.send(a, {"x": [1, "ü"]})
        raw = b.recv(4)
        size = int.from_bytes(raw, "big")
        assert json.loads(b.recv(size).decode()) == {"x": [1, "ü"]}
        a.sendall((5).to_bytes(4, "big") + b"[1, ")
        a.close()
        with pytest.raises(wire.WireError, match="closed in the middle of a frame"):
            wire.receive(b)


# ---- the real command, in a subprocess ------------------------------------------------


def _serve(
    runtime: Path, *args: str, until: str = "serving", nohup: bool = False
) -> subprocess.Popen[str]:
    """``optinspect serve`` in ``runtime``, returned once it serves, or once it has its
    lock and loads (``until="loading"``); ``nohup`` ignores SIGHUP, as nohup does."""
    from optinspect.serve.place import lock_dir

    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime.parent)}
    ignore_hup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "optinspect", "serve", "--model", "tiny", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ignore_hup,
    )

    def ready() -> bool:  # the lock file names the server once it holds the lock
        if until == "serving":
            return (runtime / "server.sock").exists()
        lock = lock_dir() / "server.lock"
        return lock.exists() and lock.stat().st_size > 0

    deadline = time.monotonic() + 180
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start: {proc.communicate()}")
        time.sleep(0.1)
    return proc


def _client(runtime: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    """``optinspect *args`` with ``runtime`` for its runtime folder, or no XDG_RUNTIME_DIR."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    if runtime is not None:
        env["XDG_RUNTIME_DIR"] = str(runtime.parent)
    return subprocess.run(
        [sys.executable, "-m", "optinspect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _status(runtime: Path | None) -> dict:
    """``serve --status --format json``, run as ``_client`` runs it."""
    status = _client(runtime, "serve", "--status", "--format", "json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def _stop(proc: subprocess.Popen[str], runtime: Path | None) -> str:
    """Stop the server ``proc`` with ``serve --stop``, run as ``_client`` runs it; what the
    server wrote on stderr (on stdout, nothing)."""
    stop = _client(runtime, "serve", "--stop")
    assert stop.returncode == 0 and stop.stderr == "stopped the optinspect server\n"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == ""
    return err


@pytest.mark.slow
def test_serve_status_stop(own_runtime) -> None:
    proc = _serve(own_runtime, "--idle", "30m")
    try:
        state = _status(own_runtime)
        assert state["model"] == "tiny" and state["pid"] == proc.pid
        text = _client(own_runtime, "serve", "--status")
        assert text.stdout.startswith("model: tiny (random weights)\nquant: 8bit\n")
        again = _client(own_runtime, "serve", "--model", "tiny")
        assert again.returncode == 1
        assert f"a server is already running (pid {proc.pid}, tiny)" in again.stderr
        err = _stop(proc, own_runtime)
    finally:
        proc.kill()
    assert err.startswith(f"serving tiny (8bit, cpu, float16) on {own_runtime / 'server.sock'}")
    assert err.endswith("optinspect serve: stopped; 0 requests served\n")
    assert not (own_runtime / "server.sock").exists()


@pytest.mark.slow
def test_after_kill_9_the_next_command_loads_here(own_runtime) -> None:
    proc = _serve(own_runtime, "--idle", "0")
    args = ("trace", "Hello world", "--model", "tiny", "--format", "json")
    served = _client(own_runtime, *args)
    assert served.returncode == 0 and served.stderr == ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (own_runtime / "server.sock").exists()  # left behind
    fallback = _client(own_runtime, *args)
    assert fallback.returncode == 0
    assert fallback.stdout == served.stdout
    assert fallback.stderr.count("\n") == 1
    assert fallback.stderr.startswith("note: the optinspect server is gone")
    assert not (own_runtime / "server.sock").exists()
    assert _client(own_runtime, *args).stderr == ""  # the note comes once


@pytest.mark.slow
def test_serve_idle_limit_ends_the_process(own_runtime) -> None:
    proc = _serve(own_runtime, "--idle", "1s")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err.endswith("optinspect serve: idle; 0 requests served\n")
    assert not (own_runtime / "server.sock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["loading", "serving"])
def test_sighup_stops_the_server_as_a_normal_stop_does(own_runtime, when) -> None:
    # Closing the terminal that runs serve sends SIGHUP.
    from optinspect.serve.place import lock_dir

    proc = _serve(own_runtime, "--idle", "0", until=when)
    os.kill(proc.pid, signal.SIGHUP)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out == ""
    lines = err.splitlines()
    assert lines[-1] == "optinspect serve: hung up; 0 requests served"
    assert [line.split(" on ")[0] for line in lines[:-1]] == (
        ["serving tiny (8bit, cpu, float16)"] if when == "serving" else []
    )
    assert not (own_runtime / "server.sock").exists()
    assert not (lock_dir() / "server.lock").exists()


@pytest.mark.slow
def test_a_server_under_nohup_outlives_sighup_and_sigterm_stops_it(own_runtime) -> None:
    from optinspect.serve.place import lock_dir

    proc = _serve(own_runtime, "--idle", "0", nohup=True)
    try:
        os.kill(proc.pid, signal.SIGHUP)
        assert _status(own_runtime)["pid"] == proc.pid  # it still serves
        os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert err.splitlines()[1:] == ["optinspect serve: terminated; 0 requests served"]
    assert not (own_runtime / "server.sock").exists()
    assert not (lock_dir() / "server.lock").exists()


@pytest.mark.slow
def test_one_server_per_user_whatever_xdg_runtime_dir_says(own_runtime) -> None:
    from optinspect.serve.place import lock_dir

    proc = _serve(own_runtime, "--idle", "0")  # with XDG_RUNTIME_DIR; the rest without
    try:
        second = _client(None, "serve", "--model", "tiny")
        assert second.returncode == 1
        assert second.stderr == (
            f"Error: a server is already running (pid {proc.pid}, tiny): stop it with "
            "optinspect serve --stop\n"
        )
        traced = _client(None, "trace", "Hello world", "--model", "tiny", "--format", "json")
        assert traced.returncode == 0 and traced.stderr == ""
        state = _status(None)
        assert state["pid"] == proc.pid and state["requests"] == 1  # it served the trace
        err = _stop(proc, None)
    finally:
        proc.kill()
    assert err.endswith("optinspect serve: stopped; 1 requests served\n")
    assert not (own_runtime / "server.sock").exists()
    assert not (lock_dir() / "server.lock").exists()
