"""Results of run.py -> the markdown of BENCHMARKS.md."""

from __future__ import annotations

import os
import re
import statistics
from typing import Any

from bench_cli import E2E_TEXT
from bench_inproc import BARE, EAGER_STATS, HOOKS_ONLY, NAIVE, NNSIGHT, OPTINSPECT, TL
from bench_util import (
    DASH,
    TIMES,
    cpu_model,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    fmt_times,
    python_version,
    ram_gib,
    table,
    verdict,
    version_of,
)

OVERHEAD_GOAL = 1.10  # at the largest token count measured (256 in a full run)
OVERHEAD_GOAL_SHORT = 1.15  # at the smallest (10 tokens), where hooks alone weigh more
STARTUP_GOAL_S = 0.3
STARTUP_GOAL_RATIO = 0.2
BATCH_GOAL = 0.87
SERVE_GOAL_S = 0.5  # a trace of the tiny model through the server, the whole process
SHAPE_NAMES = {"125m": "opt-125m", "small": "a small OPT (hidden size 64, 2 layers)"}


def _error(value: Any) -> str | None:
    if isinstance(value, dict) and "error" in value:
        return f"This section failed: `{value['error']}`."
    return None


def header(results: dict[str, Any], argv: list[str]) -> list[str]:
    command = " ".join(["python benchmarks/run.py", *argv]).strip()
    out = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {results['started']}; the run took "
        f"{fmt_seconds(results['total_s'])}. Run it again to refresh this file; do not edit it.",
    ]
    if results["quick"]:
        out += ["", "**Quick mode**: few repeats and small sizes; these figures mean little."]
    out += [
        "",
        "Every figure is a median over repeated runs after a warm-up, with the minimum and "
        "maximum in brackets. The machine is shared and noisy, so the variants of one "
        "measurement run round-robin in one process, and each ratio pairs a run with the bare "
        "forward of the same round before taking the median of those ratios.",
        "",
        "## Machine",
        "",
        table(
            ["CPU", "logical cores", "RAM", "torch threads", "load average: start", "end"],
            [
                [
                    cpu_model(),
                    os.cpu_count(),
                    f"{ram_gib():.1f} GiB" if ram_gib() else "n/a",
                    results["threads"],
                    results["load_start"],
                    results["load_end"],
                ]
            ],
        ),
        "",
        "## Versions",
        "",
        table(
            [
                "python",
                "torch",
                "transformers",
                "optinspect",
                "bitsandbytes",
                "triton",
                "nnsight",
                "TL",
            ],
            [
                [
                    python_version(),
                    version_of("torch"),
                    version_of("transformers"),
                    version_of("optinspect"),
                    version_of("bitsandbytes"),
                    version_of("triton"),
                    version_of("nnsight"),
                    version_of("transformer_lens"),
                ]
            ],
        ),
        "",
        "TL is TransformerLens.",
    ]
    return out


def goals(results: dict[str, Any]) -> list[str]:
    rows = []
    overhead = results.get("overhead")
    if isinstance(overhead, dict) and "error" not in overhead and overhead:
        targets = {max(overhead): OVERHEAD_GOAL}
        targets.setdefault(min(overhead), OVERHEAD_GOAL_SHORT)
        for tokens, goal in sorted(targets.items(), reverse=True):
            ratio = overhead[tokens][OPTINSPECT].ratio
            rows.append(
                [
                    f"hook overhead, {tokens} tokens, every module, statistics on",
                    f"\u2264 {goal:.2f}{TIMES} the bare forward",
                    f"{ratio:.2f}{TIMES}",
                    verdict(ratio <= goal),
                ]
            )
    startup = results.get("startup")
    if isinstance(startup, dict) and "error" not in startup:
        help_run = startup["optinspect --help"]
        if help_run.runs:
            seconds = statistics.median(help_run.times)
            ratio = statistics.median(help_run.ratios)
            rows.append(
                [
                    "start-up, `optinspect --help`",
                    f"< {STARTUP_GOAL_S} s and < 1/5 of `import torch`",
                    f"{fmt_seconds(seconds)}, {ratio:.2f}{TIMES} `import torch`",
                    verdict(seconds < STARTUP_GOAL_S and ratio < STARTUP_GOAL_RATIO),
                ]
            )
    batch = results.get("batch")
    if isinstance(batch, tuple):
        series, _ = batch
        relative = 1 / series[OPTINSPECT].ratio
        rows.append(
            [
                "batch throughput, every module, statistics on",
                f"\u2265 {BATCH_GOAL:.2f} of the bare forward's sentences/s",
                f"{relative:.2f}",
                verdict(relative >= BATCH_GOAL),
            ]
        )
    served = served_trace(results)
    if served is not None:
        rows.append(
            [
                "a trace of the tiny model through the server (`--quant none`), whole process",
                f"< {SERVE_GOAL_S} s wall",
                fmt_seconds(served),
                verdict(served < SERVE_GOAL_S),
            ]
        )
    if not rows:
        return []
    return ["", "## Goals", "", table(["measure", "goal", "this run", "result"], rows)]


def served_trace(results: dict[str, Any]) -> float | None:
    """Median wall time of ``trace`` on tiny, ``--quant none``, through the server."""
    value = results.get("serve")
    if not isinstance(value, dict) or "rows" not in value:
        return None
    for row in value["rows"]:
        trace = row.served.get("trace")
        if row.model == "tiny" and row.quant == "none" and trace is not None and trace.runs:
            return statistics.median(trace.times)
    return None


def load_note(results: dict[str, Any], *keys: str) -> list[str]:
    """The 1-minute load average when each of these measurements began and ended."""
    loads = results.get("section_load", {})
    waited = results.get("waited", {})
    parts = []
    for key in (k for k in keys if k in loads):
        start, end = (f"{x:.2f}" if x is not None else "n/a" for x in loads[key])
        wait = f" (after waiting {waited[key]:.0f} s for it to fall)" if key in waited else ""
        parts.append(f"{key} {start}{wait} {DASH} {end}")
    if not parts:
        return []
    return [
        "",
        "1-minute load average at the start and end of each measurement: " + ", ".join(parts) + ".",
    ]


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def overhead_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 1. Hook overhead", ""]
    value = results.get("overhead")
    if (message := _error(value)) is not None:
        return [*out, message]
    model = results["model"]
    out += [
        f"A random-weight model shaped like {SHAPE_NAMES.get(model['shape'], model['shape'])} "
        f"({model['params'] / 1e6:.1f} M parameters, float32, CPU); one sentence of random "
        f"token ids. optinspect hooks all {results['modules']} named submodules "
        "(`--filter '*'`) with `optinspect.engine.capture.capture`, runs one forward under "
        "`torch.inference_mode()` and collects the records (statistics come to the host in "
        "one transfer). The naive baseline registers a forward hook per module that computes "
        "the same nine statistics with one `.item()` each. The bare forward is the same call "
        "with no hooks.",
        "",
    ]
    out.append(
        f"optinspect's statistics on the CPU ran on {results.get('stats_path', 'n/a')}. Where "
        "that kernel is in use, the row marked `OPTINSPECT_STATS=eager` runs the same capture "
        "with the eager torch statistics (the old ones), in the same rounds."
    )
    out += ["", *_overhead_table(value)]
    single = results.get("overhead_1thread")
    if single is not None:
        out += ["", "### At 1 thread", "", "The same, with `torch.set_num_threads(1)`.", ""]
        if (message := _error(single)) is not None:
            out.append(message)
        else:
            out += _overhead_table(single)
    return out


def _overhead_table(value: dict[int, dict[str, Any]]) -> list[str]:
    rows = []
    for tokens, series in value.items():
        for label in (BARE, OPTINSPECT, EAGER_STATS, HOOKS_ONLY, NAIVE):
            if label in series:
                s = series[label]
                rows.append([tokens, label, fmt_times(s.times), fmt_ratio(s.ratios)])
    split = []
    for tokens, series in value.items():
        hooks = series[HOOKS_ONLY].ratio - 1
        stats = series[OPTINSPECT].ratio - series[HOOKS_ONLY].ratio
        part = (
            f"at {tokens} tokens the hooks and records add {hooks:+.0%} of a bare forward "
            f"and the statistics {stats:+.0%}"
        )
        if EAGER_STATS in series:
            part += f" ({series[EAGER_STATS].ratio - series[HOOKS_ONLY].ratio:+.0%} eager)"
        split.append(part)
    return [
        table(["tokens", "run", "wall time", "ratio to bare"], rows),
        "",
        "Where the overhead goes (statistics on minus statistics off): " + "; ".join(split),
    ]


def render_only(only: str, results: dict[str, Any], argv: list[str]) -> str:
    """``run.py --only X``: the header, the goals X measured and X's sections."""
    lines = header(results, argv) + goals(results)
    for part in ONLY_SECTIONS[only]:
        lines += part(results)
    return "\n".join(lines) + "\n"


def peers_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 2. Peers", ""]
    if "peers" not in results:
        return [*out, "Not measured in this run (`--quick` or `--skip-peers`)."]
    value = results["peers"]
    if (message := _error(value)) is not None:
        return [*out, message]
    series_by_tokens, setup = value
    out += [
        "Same model, same input, same process, round-robin with the bare forward. Each peer "
        "saves every output it can see and the same statistics are then computed over them "
        "with `optinspect.engine.stats.summarize_tensor` (one host transfer), so the difference is "
        "the capture mechanism; the rows without statistics show the capture alone. Each "
        "peer wraps its own deep copy of the model (nnsight and TransformerLens both modify "
        "what they wrap).",
        "",
    ]
    for tool in ("nnsight", "transformer_lens"):
        note = setup.notes.get(tool, "not installed")
        out.append(f"- **{tool}**: {note}")
    out.append("")
    rows = []
    for tokens, series in series_by_tokens.items():
        for label, s in series.items():
            count = setup.counts.get(label, "")
            rows.append([tokens, label, count, fmt_times(s.times), fmt_ratio(s.ratios)])
    out.append(table(["tokens", "run", "tensors summarised", "wall time", "ratio to bare"], rows))
    memory = results.get("memory")
    if memory is not None:
        out += ["", "### Peak memory of one call", ""]
        if (message := _error(memory)) is not None:
            out.append(message)
        else:
            out += [
                f"{results['plan']['memory']} tokens. Each tool runs in a fresh process with "
                "glibc's mmap threshold fixed at 64 KiB (so freed tensors go back to the OS); "
                "after one untimed call, the peak RSS (VmHWM, reset through "
                "`/proc/self/clear_refs`) of a second call is compared with the RSS just "
                "before it. The baseline holds the interpreter, the libraries and the model.",
                "",
            ]
            labels = {"bare": BARE, "optinspect": OPTINSPECT, "naive": NAIVE}
            labels |= {"nnsight": NNSIGHT, "transformer_lens": TL}
            rows = []
            for row in memory:
                label = labels.get(row["tool"], row["tool"])
                if "error" in row:
                    rows.append([label, f"did not run: `{row['error']}`", ""])
                else:
                    rows.append(
                        [label, f"{row['extra_mib']:.0f} MiB", f"{row['baseline_mib']:.0f} MiB"]
                    )
            out.append(table(["run", "peak RSS above baseline", "baseline RSS"], rows))
    return out


def command_rows(results: dict[str, Any], with_ratio: bool) -> list[list[str]]:
    rows = []
    for label, result in results.items():
        if result.error is not None and not result.runs:
            failed = [f"`{label}`", f"failed: `{result.error}`", ""]
            rows.append([*failed, ""] if with_ratio else failed)
            continue
        row = [f"`{label}`", fmt_times(result.times)]
        if with_ratio:
            row.append(fmt_ratio(result.ratios))
        row.append(f"{statistics.median(result.rss):.0f} MiB")
        rows.append(row)
    return rows


def startup_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 3. Start-up", ""]
    value = results.get("startup")
    if (message := _error(value)) is not None:
        return [*out, message]
    out += [
        "Wall time of a fresh process, from spawn to exit, and its peak RSS (from `wait4`). "
        "`optinspect` is the venv's console script; the other is the same interpreter.",
        "",
        table(
            ["command", "wall time", "ratio to `import torch`", "peak RSS"],
            command_rows(value, True),
        ),
    ]
    out += ["", "### A local load", ""]
    loads = results.get("loads")
    if (message := _error(loads)) is not None:
        out.append(message)
    elif loads is None:
        out.append("Not measured in this run (`--quick`).")
    else:
        out += [
            "`--no-server`: the process imports torch and transformers, loads the tiny model "
            "(built in, random weights) and traces one word; section 8 has the same work "
            "through a server. Wall time and peak RSS of the process.",
            "",
            table(["command", "wall time", "peak RSS"], command_rows(loads, False)),
        ]
    out += imports_part(results.get("imports"))
    return out + load_note(results, "startup", "loads", "imports")


def imports_part(value: Any) -> list[str]:
    out = ["", "### What a local load imports", ""]
    if (message := _error(value)) is not None:
        return [*out, message]
    if value is None:
        return [*out, "Not measured in this run."]
    from bench_imports import TARGET, WORKER_LABEL

    if value["exit"] != 0:
        return [*out, f"`{WORKER_LABEL}` exited {value['exit']} in the import worker."]
    out += [
        f"`{WORKER_LABEL}` runs in a fresh process through `optinspect.cli.run`, under a "
        "`sys.meta_path` finder that records the stack each time a module is first looked for "
        "(`benchmarks/bench_imports.py`).",
        "",
    ]
    if value["chain"]:
        out += [
            f"`{TARGET}` is first imported here (outermost first; frames of optinspect, "
            "transformers and torch only):",
            "",
        ]
        out += [
            f"{i}. `{f['file']}:{f['line']}` `{f['code']}`" for i, f in enumerate(value["chain"], 1)
        ]
    else:
        out.append(f"`{TARGET}` was not imported.")
    out += [
        "",
        "The modules of transformers that the run loaded and that name `torch._dynamo` (a scan of "
        "their source), with those the issue names. A line of the first kind runs when the "
        "module is imported, so each such module would import `torch._dynamo` even if the "
        "chain above did not; a line inside a function runs only when it is called.",
        "",
    ]
    rows = []
    for row in value["importers"]:
        by = row["imported_by"]
        rows.append(
            [
                f"`{row['file']}`",
                f"`{by['file']}:{by['line']}`" if by else DASH,
                ", ".join(map(str, row["at_import"])) or DASH,
                ", ".join(map(str, row["in_functions"])) or DASH,
                "yes" if row["module"] in value["named_loaded"] else "",
            ]
        )
    header_row = ["module", "imported by", "lines run at import", "lines in functions"]
    out.append(table([*header_row, "named in the issue"], rows))
    missing = [name for name, loaded in value["named_loaded"].items() if not loaded]
    if missing:
        out += [
            "",
            "Named in the issue but not loaded by this run: "
            + ", ".join(f"`{m}`" for m in missing)
            + ".",
        ]
    times = value.get("importtime")
    if times is not None:
        cumulative = {k: statistics.median(v) for k, v in times["cumulative"].items() if v}
        out += [
            "",
            f'`python -X importtime -c "{times["statement"]}"`, median of {times["repeats"]} '
            "runs: the cumulative import time of each module (its own and what it imported "
            "first; `-X importtime` adds a little of its own).",
            "",
            table(
                ["module", "cumulative import time"],
                [[f"`{name}`", fmt_seconds(seconds)] for name, seconds in cumulative.items()],
            ),
        ]
        whole = cumulative.get("transformers.models.opt.modeling_opt")
        if whole and TARGET in cumulative:
            out += ["", f"`{TARGET}` is {cumulative[TARGET] / whole:.0%} of that import."]
    bnb = value["bitsandbytes_loaded"]
    out += [
        "",
        f"After that run, `'bitsandbytes' in sys.modules` is {bnb}: `--quant none` "
        + ("**imports bitsandbytes**, which it must not." if bnb else "does not import it."),
    ]
    return out


def config_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 4. Configuration-only work", ""]
    value = results.get("config")
    if (message := _error(value)) is not None:
        return [*out, message]
    commands, missing = value
    out += [
        "Commands that need only the model's config (built in for the OPT family, so no "
        "network): no weights are read or allocated. Wall time and peak RSS of the process.",
        "",
    ]
    if missing is not None:
        out += [f"`optinspect params`: not available in this build ({missing}).", ""]
    out.append(table(["command", "wall time", "peak RSS"], command_rows(commands, False)))
    return out + load_note(results, "config")


def batch_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 5. Batch throughput", ""]
    value = results.get("batch")
    if (message := _error(value)) is not None:
        return [*out, message]
    series, facts = value
    count = facts["sentences"]
    out += [
        f"{count} sentences of {facts['tokens_min']}{DASH}{facts['tokens_max']} tokens (mean "
        f"{facts['tokens_mean']:.1f}), batch size {facts['batch']}, on the model of section 1. "
        f"optinspect: `iter_trace(..., filters=('*',), batch_size={facts['batch']})`, all "
        f"{facts['modules']} modules hooked, statistics only (per sentence, padding excluded), "
        "including tokenizing and building the records. Bare: the same right-padded batches, "
        "already tokenized, through `model(...)`.",
        "",
    ]
    rows = []
    for label in (BARE, OPTINSPECT):
        s = series[label]
        relative = "1.00" if label == BARE else f"{1 / s.ratio:.2f}"
        rows.append(
            [label, fmt_times(s.times), fmt_rate(s.times, count), fmt_ratio(s.ratios), relative]
        )
    header_row = ["run", f"wall time, {count} sentences", "sentences/s", "time ratio", "throughput"]
    out.append(table(header_row, rows))
    return out


def e2e_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 6. End to end", ""]
    value = results.get("e2e")
    if (message := _error(value)) is not None:
        return [*out, message]
    result, parts = value
    if result.error is not None and not parts:
        return [*out, f"`{result.argv}` failed: `{result.error}`"]
    out += [
        f"`{result.label}`: wall time from spawning the process to its exit (measured outside), "
        "and the split the program prints on stderr (`import` counts from when optinspect's "
        "own code starts, so the interpreter's start-up is only in the outside figure). "
        "*Outside total* is the wall time less the program's total: the interpreter's start "
        "before optinspect's first line and the process's exit after its last.",
        "",
        table(
            [
                "wall time (outside)",
                "peak RSS",
                "import",
                "load",
                "forward",
                "render",
                "total",
                "outside total",
            ],
            [
                [
                    fmt_times(result.times),
                    f"{statistics.median(result.rss):.0f} MiB",
                    *(fmt_times(parts.get(k, [])) for k in ("import", "load", "forward")),
                    *(fmt_times(parts.get(k, [])) for k in ("render", "total", "outside")),
                ]
            ],
        ),
    ]
    return out


def cuda_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 7. CUDA", ""]
    value = results.get("cuda")
    if value is None:
        return [
            *out,
            "Not measured yet: this machine has no CUDA device (`torch.cuda.is_available()` is "
            "False). Where it is, `run.py` measures a random-weight model shaped like opt-1.3b, "
            "in 8-bit and in float16: load time, forward, the trace overhead ratio, peak GPU "
            "memory and nnsight on the same model. That code (`benchmarks/bench_cuda.py`) has "
            "never run: it was written on a machine without a GPU.",
        ]
    if (message := _error(value)) is not None:
        return [*out, message]
    out += [
        f"{value['device']}; random-weight model, {value['model']}; {value['tokens']} tokens. "
        "Written without a GPU to test on: check these figures before trusting them.",
        "",
    ]
    rows = []
    for row in value["rows"]:
        series = row["series"]
        nn = row.get("nnsight")
        rows.append(
            [
                row["quant"],
                fmt_seconds(row["load_s"]),
                fmt_times(series[BARE].times),
                fmt_ratio(series[OPTINSPECT].ratios),
                fmt_ratio(series[EAGER_STATS].ratios) if EAGER_STATS in series else DASH,
                row.get("triton", DASH),
                f"{row[f'peak_gib {BARE}']:.2f} / {row[f'peak_gib {OPTINSPECT}']:.2f} GiB",
                fmt_ratio(nn.ratios) if nn is not None else row.get("nnsight_error", ""),
            ]
        )
    header_row = [
        "quant",
        "load",
        "bare forward",
        "optinspect ratio (Triton statistics)",
        "ratio, eager statistics",
        "Triton kernel",
        "peak GPU bare / traced",
    ]
    out.append(table([*header_row, "nnsight + statistics ratio"], rows))
    return out


def serve_section(results: dict[str, Any]) -> list[str]:
    out = ["", "## 8. Model server", ""]
    value = results.get("serve")
    if (message := _error(value)) is not None:
        return [*out, message]
    if value is None:
        return [*out, "Not measured in this run."]
    through, warmup, local = value["served_calls"], value["warmup"], value["local_calls"]
    out += [
        f'Each call is a whole `python -m optinspect COMMAND "{E2E_TEXT}" --model M --quant Q '
        "--format json` process, timed from spawn to exit. Through the server: "
        f"{plural(through, 'call')} of each command, round-robin over the commands after "
        f"{plural(warmup, 'untimed round')}, answered by an `optinspect serve --model M "
        "--quant Q` that the benchmark starts in a private temporary `XDG_RUNTIME_DIR` and "
        f"stops with `serve --stop`. Local: {plural(local, 'call')} of the same line with "
        "`--no-server` (each "
        "loads the model), run before the server starts. *Same output*: every call, served "
        "and local, printed the same stdout, byte for byte.",
        "",
    ]
    rows = []
    for row in value["rows"]:
        if row.error is not None:
            rows.append([row.model, row.quant, "", f"failed: `{row.error}`", "", "", ""])
            continue
        for command, served in row.served.items():
            here = row.local.get(command)
            ratio = DASH
            if served.runs and here is not None and here.runs:
                ratio = (
                    f"{statistics.median(here.times) / statistics.median(served.times):.1f}{TIMES}"
                )
            same = {True: "yes", False: "**no**", None: DASH}[row.same_output(command)]
            rows.append(
                [row.model, row.quant, command, _timing(served), _timing(here), ratio, same]
            )
    head = ["model", "quant", "command", f"through the server ({plural(through, 'call')})"]
    head += [f"local, `--no-server` ({plural(local, 'call')})", "local / server", "same output"]
    out.append(table(head, rows))
    trace = served_trace(results)
    if trace is not None:
        out += [
            "",
            "The goal, a trace of the tiny model through the server in under "
            f"{SERVE_GOAL_S} s of wall time on this kind of machine (`--quant none`, the "
            f"median above): {verdict(trace < SERVE_GOAL_S)}, at {fmt_seconds(trace)}.",
        ]
    out += [
        "",
        "### Server start-up",
        "",
        "From launching `optinspect serve` until its socket answers a `status` request (the "
        "one `serve --status` sends, polled every 50 ms); then `serve --status --format json` "
        "is timed once as a process. *Requests*: the jobs the server counted, against the "
        "calls made through it (warm-up included).",
        "",
    ]
    rows = []
    for row in value["rows"]:
        if row.error is not None or row.status is None:
            continue
        rss = row.status["memory"].get("rss")
        asked = row.status_run
        counted = row.status["requests"]
        requests = f"{counted} of {row.expected_requests}"
        rows.append(
            [
                row.model,
                row.quant,
                fmt_seconds(row.startup_s),
                fmt_seconds(asked.seconds) if asked.returncode == 0 else f"exit {asked.returncode}",
                f"{rss / 2**20:.0f} MiB" if rss else DASH,
                requests if counted == row.expected_requests else f"**{requests}**",
                row.stopped,
                DASH.join(f"{x:.2f}" if x is not None else "n/a" for x in row.load),
            ]
        )
    head = ["model", "quant", "start-up", "`serve --status`", "server RSS", "requests", "stop"]
    head.append("1-min load, start " + DASH + " end")
    out.append(table(head, rows))
    return out + load_note(results, "serve")


def _timing(result: Any) -> str:
    if result is None:
        return "not run"
    if result.error is not None and not result.runs:
        return f"failed: `{result.error}`"
    return fmt_times(result.times)


#: The sections ``run.py --only X`` writes.
ONLY_SECTIONS = {
    "overhead": (overhead_section,),
    "startup": (startup_section, config_section),
    "serve": (serve_section,),
}


def render(results: dict[str, Any], argv: list[str]) -> str:
    lines = header(results, argv)
    lines += goals(results)
    for part in (
        overhead_section,
        peers_section,
        startup_section,
        config_section,
        batch_section,
        e2e_section,
        cuda_section,
        serve_section,
    ):
        lines += part(results)
    durations = results.get("durations", {})
    if durations:
        spent = ", ".join(f"{key} {fmt_seconds(s)}" for key, s in durations.items())
        lines += ["", f"Time per section: {spent}."]
    return "\n".join(lines) + "\n"


# -- writing some sections into an existing report (run.py --only X --merge) ------------
_NUMBERED = re.compile(r"## (\d+)\. ")
FOOTER = "Time per section:"
GOALS = "## Goals"


def _blocks(text: str) -> tuple[list[str], list[list[str]]]:
    """The lines before the first ``## `` heading, and each ``## `` section's lines, each
    without its trailing blank lines."""
    blocks: list[list[str]] = [[]]
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    for block in blocks:
        _trim(block)
    return blocks[0], blocks[1:]


def _trim(block: list[str]) -> None:
    """Drop the blank lines at the end of ``block``."""
    while block and not block[-1]:
        block.pop()


def _number(block: list[str]) -> int | None:
    match = _NUMBERED.match(block[0])
    return int(match.group(1)) if match else None


def _merge_goals(old: list[str], new: list[str]) -> list[str]:
    """``old``'s goals table with ``new``'s rows in place of those of the same measure."""

    def key(row: str) -> str:
        return row.split("|")[1].strip()

    table_rows = [line for line in old if line.startswith("|")]
    fresh = {key(row): row for row in [line for line in new if line.startswith("|")][2:]}
    merged = [fresh.pop(key(row), row) for row in table_rows[2:]] + list(fresh.values())
    first = old.index(table_rows[0])
    return old[:first] + table_rows[:2] + merged + old[first + len(table_rows) :]


def merge(old_text: str, new_text: str, results: dict[str, Any], argv: list[str]) -> str:
    """``old_text`` with the numbered sections and goal rows of ``new_text`` put in; a line
    under the title says which sections were rewritten, by what and when."""
    preamble, blocks = _blocks(old_text)
    footer: list[str] = []
    if blocks and (at := _footer_at(blocks[-1])) is not None:
        footer = blocks[-1][at:]
        del blocks[-1][at:]
        _trim(blocks[-1])
    numbers = []
    for block in _blocks(new_text)[1]:
        number = _number(block)
        if block[0] == GOALS:
            goals_at = next((i for i, b in enumerate(blocks) if b[0] == GOALS), None)
            if goals_at is None:
                first = next(i for i, b in enumerate(blocks) if _number(b) is not None)
                blocks.insert(first, block)
            else:
                blocks[goals_at] = _merge_goals(blocks[goals_at], block)
        elif number is not None:  # not the machine and versions: each section has its load
            numbers.append(str(number))
            same = next((i for i, b in enumerate(blocks) if _number(b) == number), None)
            if same is not None:
                blocks[same] = block
            else:
                later = (i for i, b in enumerate(blocks) if (_number(b) or -1) > number)
                blocks.insert(next(later, len(blocks)), block)
    which = (
        f"Sections {', '.join(numbers)} were" if len(numbers) > 1 else f"Section {numbers[0]} was"
    )
    command = " ".join(["python benchmarks/run.py", *argv])
    quick = " (**quick mode**)" if results["quick"] else ""
    they = "they measure" if len(numbers) > 1 else "it measures"
    note = (
        f"{which} rewritten alone by `{command}` on {results['started']}{quick}, with the "
        f"goals {they}; that took {fmt_seconds(results['total_s'])}."
    )
    kept = [line for line in preamble if not line.startswith(f"{which} rewritten alone")]
    written = next(i for i, line in enumerate(kept) if line.startswith("Written by"))
    kept[written + 1 : written + 1] = ["", note]
    kept = [line for i, line in enumerate(kept) if line or (i and kept[i - 1])]
    parts = [kept, *blocks] + ([footer] if footer else [])
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


def _footer_at(block: list[str]) -> int | None:
    return next((i for i, line in enumerate(block) if line.startswith(FOOTER)), None)
