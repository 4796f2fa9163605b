"""The Typer app: composes the commands and owns the one error boundary.

Heavy imports (torch, transformers) happen inside command bodies, so
``optinspect --help`` answers without loading them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Annotated, Any

import typer

from .commands.attention import attention_command
from .commands.calibrate import calibrate_command
from .commands.compare import compare_command
from .commands.lens import lens_command
from .commands.outliers import outliers_command
from .commands.params import params_command
from .commands.report import report_command
from .commands.serve import serve_command
from .commands.trace import trace_command
from .commands.tree import tree_command
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_USAGE,
    OptinspectError,
    describe,
)
from .model.quiet import no_hub_kernels

app = typer.Typer(
    name="optinspect",
    help="Look inside decoder language models (OPT, Llama, Mistral, Qwen2, GPT-2): "
    "every module's output, in execution order.",
    pretty_exceptions_enable=False,
    # Plain help: rich's help formatter imports markdown-it and costs ~130 ms per --help.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("trace")(trace_command)
app.command("params")(params_command)
app.command("tree")(tree_command)
app.command("lens")(lens_command)
app.command("attention")(attention_command)
app.command("compare")(compare_command)
app.command("outliers")(outliers_command)
app.command("calibrate")(calibrate_command)
app.command("report")(report_command)
app.command("serve")(serve_command)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"optinspect {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print optinspect's version and exit.",
        ),
    ] = False,
) -> None:
    """Look inside decoder language models (OPT, Llama, Mistral, Qwen2, GPT-2): every
    module's output, in execution order."""
    if ctx.invoked_subcommand is None:
        # Bare `optinspect` asks what it can do: the help, on stdout, and success, as
        # pip, docker and kubectl answer (not a usage error, as git does).
        typer.echo(ctx.get_help())


def _error(message: str) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()


class _PlainArgument(typer.core.TyperArgument):
    """An argument whose help shows its metavar (TEXT) without Typer's ``<str>`` after it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain_arguments(command: Any) -> None:
    for sub in getattr(command, "commands", {}).values():
        for param in sub.params:
            if type(param) is typer.core.TyperArgument:
                param.__class__ = _PlainArgument


def _told(error: Exception, debug: bool) -> int:
    """Tell the user of ``error`` in one line (a traceback first with --debug); its exit code.

    An error met by the server comes with the server's traceback, shown with --debug.
    """
    if debug:
        remote = getattr(error, "trace", None)
        if remote:
            sys.stderr.write(remote)
        else:
            traceback.print_exc()
    message, code, hint = describe(error)
    _error(message)
    if hint and not debug:
        sys.stderr.write("Run again with --debug for the traceback.\n")
    return code


def _reader_gone() -> int:
    """The reader went away (``| head``): stop quietly, as ``cat`` does, with the status a
    process ended by SIGPIPE has (128 + 13), and send what is still buffered nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    _plain_arguments(command)
    try:
        # The whole run, the server's too: no library fetches or runs hub code.
        with no_hub_kernels():
            result = command.main(args=args, prog_name="optinspect", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        _error("interrupted")
        return EXIT_INTERRUPTED
    except typer.TyperException as e:
        # Typer's parsing errors (bad option values, missing arguments): usage errors.
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message.strip():  # empty when a bare group prints its help
            _error(message.replace("Value error, ", ""))
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            sys.stderr.write(f"Try '{ctx.command_path} --help' for help.\n")
        return int(getattr(e, "exit_code", EXIT_USAGE))
    except OptinspectError as e:
        return _told(e, debug)
    except BrokenPipeError:
        return _reader_gone()
    except SystemExit as e:
        # Click turns a closed stdout into a silent exit 1; it was a closed pipe.
        if isinstance(e.__context__, BrokenPipeError):
            return _reader_gone()
        raise
    except Exception as e:
        return _told(e, debug)
    if result == EXIT_INTERRUPTED:
        # Typer turns Ctrl-C inside a command into a silent exit code 130.
        _error("interrupted")
    return result if isinstance(result, int) else 0


#: Commands whose process ends through the interpreter's own teardown: the server holds
#: its socket, its lock and its threads until then.
_FULL_TEARDOWN = frozenset({"serve"})


def _flushed(code: int) -> int:
    """``code`` once stdout and stderr are flushed: EXIT_PIPE when stdout's reader went
    away, 1 (and one line) when the rest of the output could not be written."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _reader_gone()
    except (OSError, ValueError) as e:  # a full disk, a closed file
        _error(f"cannot write the output: {e}")
        code = code or 1
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    return code


def _may_skip_teardown(args: list[str]) -> bool:
    """Whether the process may end at once once its output is flushed: no thread, child
    process or launcher's process group to wind down, and not the server."""
    import threading

    if threading.active_count() > 1 or any(arg in _FULL_TEARDOWN for arg in args[:1]):
        return False
    if os.environ.get("WORLD_SIZE", "1") != "1":  # torchrun: the ranks end as torch expects
        return False
    processes = sys.modules.get("multiprocessing")
    return processes is None or not processes.active_children()


def main() -> None:
    """Console-script entry point (``optinspect``, ``python -m optinspect``).

    Once stdout and stderr are flushed, the process ends at once (``os._exit``) when
    nothing needs the interpreter's teardown: freeing torch and transformers and running
    their exit hooks took about a second after the last line. ``run()``, which tests and
    the server call, never ends the process.
    """
    args = sys.argv[1:]
    code = _flushed(run(args))
    if _may_skip_teardown(args):
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.shutdown()  # handlers that write to files flush and close
        os._exit(code)
    sys.exit(code)
