"""Cases 2 and 3, start-up and latency, both timed by hyperfine: how soon
`pincat serve` prints its fingerprint, and how long a 100-byte send takes."""

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

from .common import REFERENCE, SHM, TIMEOUT, advantage, fill, fmt, judge, log, md, skipped_rows
from .procs import free_port, reap, stop, wait_listening, write_message
from .tools import TOOLS, case_tools, skipped_outcomes

HYPERFINE_WARMUP = 3
HYPERFINE_MIN_RUNS = 20

# `sh -c WAIT_FOR_LINE LINE FIFO COMMAND...` starts COMMAND in the background
# with stdout and stderr into the named pipe FIFO, reads that pipe line by
# line until a line contains LINE, SIGKILLs COMMAND, waits for it to be gone
# (else its end of FIFO could still be open when the next run starts reading,
# and its close would look like the next COMMAND's end) and exits 0; 1 if
# COMMAND closed its output first. Hyperfine times this whole wrapper; it is sh
# rather than a bash coprocess because bash's own start-up would dominate.
WAIT_FOR_LINE = ('f=$1; shift; { exec "$@"; } >"$f" 2>&1 & p=$!; '
                 'while IFS= read -r l; do case $l in *"$0"*) kill -9 $p; wait $p; exit 0;; esac; '
                 'done <"$f"; exit 1')


def hyperfine_command(tool, ctx):
    """(command line for hyperfine, whether it needs a shell) for one tool."""
    argv = fill(tool.sender, ctx)
    if tool.ready:
        return shlex.join(["sh", "-c", WAIT_FOR_LINE, tool.ready, ctx["fifo"]] + argv), False
    if tool.sender_stdin:
        return f"{shlex.join(argv)} < {shlex.quote(tool.sender_stdin.format(**ctx))}", True
    return shlex.join(argv), False


def hyperfine(name, command, shell):
    """Times one command with hyperfine (warm-up runs, a minimum number of
    runs, results exported as JSON); returns figures in ms."""
    out = os.path.join(SHM, "hyperfine.json")
    argv = ["hyperfine", "--style", "basic", "--warmup", str(HYPERFINE_WARMUP),
            "--min-runs", str(HYPERFINE_MIN_RUNS), "--export-json", out,
            "--command-name", name]
    if not shell:
        argv.append("--shell=none")
    log(f"  hyperfine: {command}")
    # Own session: if it hangs, whatever it started is killed with it.
    p = subprocess.Popen(argv + [command], stdin=subprocess.DEVNULL, stdout=sys.stderr,
                         start_new_session=True)
    try:
        reap(p, TIMEOUT)
    finally:
        stop(p, group=True)
    if p.returncode:
        raise RuntimeError(f"hyperfine exited with {p.returncode}")
    with open(out) as f:
        ms = [t * 1000 for t in json.load(f)["results"][0]["times"]]
    return {"ms": statistics.median(ms), "mean": statistics.mean(ms),
            "stdev": statistics.stdev(ms) if len(ms) > 1 else 0.0, "min": min(ms), "runs": len(ms)}


def timed_case(case, ctx):
    """Times every tool of a hyperfine case, each against its own receiver
    (started first, killed after) when it has one. Returns (results, skipped)."""
    tools, skipped = case_tools(case)
    if shutil.which("hyperfine") is None:
        log(f"{case}: hyperfine missing: skipped")
        return {}, {t.name: "hyperfine missing: skipped" for t in TOOLS if t.case == case}
    results = {}
    for tool in tools:
        log(f"{case}: {tool.name}")
        c = dict(ctx, port=free_port())
        server = None
        try:
            if tool.receiver:
                server = subprocess.Popen(fill(tool.receiver, c), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_listening(c["port"])
            results[tool.name] = hyperfine(tool.name, *hyperfine_command(tool, c))
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            log(f"  FAILED: {e}")
            results[tool.name] = {"error": str(e)}
        finally:
            stop(server)
    return results, skipped


def timed_report(case, title, intro, results, skipped, after):
    """Markdown for a hyperfine case; returns (lines, target outcomes)."""
    values = {name: {"ms": r.get("ms")} for name, r in results.items()}
    ref = values.get(REFERENCE, {}).get("ms")
    lines = [f"## {title}", "", intro, "",
             "| tool | median ms | mean ± σ ms | min ms | runs | pincat advantage | target | met "
             "| note |", "|---|---:|---:|---:|---:|---:|---|---|---|"]
    outcomes = []
    for tool in (t for t in TOOLS if t.case == case and t.name in results):
        r = results[tool.name]
        goal, met, out = judge(tool, values, title.lower())
        outcomes += out
        if "error" in r:
            lines.append(f"| {md(tool.name)} | - | - | - | - | - | {goal} | {met} | "
                         f"failed: {r['error']} |")
            continue
        adv = advantage("ms", ref, r["ms"]) if tool.name != REFERENCE and not tool.baseline \
            else None
        lines.append(f"| {md(tool.name)} | {r['ms']:.2f} | {r['mean']:.2f} ± {r['stdev']:.2f} | "
                     f"{r['min']:.2f} | {r['runs']} | {fmt(adv, 2, 'x')} | {goal} | {met} | "
                     f"{tool.note} |")
    lines += skipped_rows(skipped, 9)
    outcomes += skipped_outcomes(case, title.lower(), skipped)
    return lines + ["", after, ""], outcomes


def startup(ctx):
    fifo = os.path.join(SHM, "ready.fifo")
    os.mkfifo(fifo)
    results, skipped = timed_case("startup", dict(ctx, fifo=fifo))
    intro = (f"Timed by hyperfine (--shell=none, {HYPERFINE_WARMUP} warm-up runs, at least "
             f"{HYPERFINE_MIN_RUNS} runs). Neither server exits by itself, so each run is "
             "`sh -c WRAPPER LINE FIFO COMMAND...`: sh starts COMMAND in the background with "
             "its stdout and stderr into the named pipe FIFO, reads FIFO until a line contains "
             "LINE, SIGKILLs COMMAND, waits for it and exits. Timed: sh's start, the fork and "
             "exec of COMMAND, COMMAND up to writing that line, the kill, the reaping and sh's "
             "exit. COMMAND is "
             "`pincat serve --listen 127.0.0.1:0 --json` (LINE: its listening event, which "
             "carries the fingerprint) and `ncat -v --ssl -l 127.0.0.1 PORT` (LINE: `Ncat: "
             "Listening on`).")
    base = results.get("wrapper alone", {}).get("ms")
    net = [f"{md(name)} {r['ms'] - base:.2f} ms" for name, r in results.items()
           if base and r.get("ms") and name != "wrapper alone"]
    after = ("The `wrapper alone` row is the same wrapper around `echo ready` (the external "
             "echo): what the wrapper itself costs."
             + (f" Medians minus the wrapper's: {', '.join(net)}." if net else "")
             + " The target is checked on the median with the wrapper included.")
    return timed_report("startup", "Start-up", intro, results, skipped, after)


def latency(ctx):
    results, skipped = timed_case("latency", dict(ctx, msg=write_message()))
    intro = (f"Timed by hyperfine ({HYPERFINE_WARMUP} warm-up runs, at least "
             f"{HYPERFINE_MIN_RUNS} runs, through its default shell, whose start-up hyperfine "
             "subtracts): `pincat send 127.0.0.1:PORT --pin PIN --quiet --code CODE < msg` (and "
             "without the code to `pincat serve --allow-any`) and `ncat --ssl "
             "--send-only 127.0.0.1 PORT < msg`, a 100-byte message from start to exit, each "
             "against a server started once beforehand: `pincat serve --keep-open` and `ncat "
             "--ssl --keep-open --recv-only -l`. Hyperfine subtracts its mean shell start-up "
             "from every run, so a run's figure can fall below the true time (look at the "
             "median, not the minimum).")
    after = ("pincat's sender exits when the receiver's receipt for the data has arrived "
             "(three round trips after connect: the TLS handshake, the code exchange, then "
             "offer and data out with the receipt back; two without a code; the round-trip "
             "case below counts them through a delay proxy); ncat's exits after sending, with "
             "no confirmation.")
    lines, outcomes = timed_report("latency", "Latency", intro, results, skipped, after)
    code_ms = results.get("pincat", {}).get("ms")
    any_ms = results.get("pincat --allow-any", {}).get("ms")
    if code_ms is not None and any_ms is not None:
        cost = code_ms - any_ms
        met = "met" if cost < 2 else "**missed**"
        lines += [f"The code's cost: median {code_ms:.2f} ms with it, {any_ms:.2f} ms without "
                  f"(`--allow-any`): **{cost:+.2f} ms** (target < 2 ms: {met}).", ""]
        outcomes.append(("latency: the code's cost, pincat minus pincat --allow-any",
                         f"{cost:+.2f} ms", "< 2 ms", met))
    return lines, outcomes
