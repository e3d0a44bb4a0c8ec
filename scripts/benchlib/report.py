"""The whole run and the single-case runs: machine information, the targets
summary and the Markdown document, printed and written to BENCH_OUT."""

import os
import platform
import shutil
import subprocess
import sys
import time

from .common import (FWD_MB, OUT, PINCAT, PIPE_MB, REPS, RESUME_MB, RTT_RUNS, SIZE_MB, build,
                     context, log)
from .common import md, plural
from .forward import forward
from .load import load
from .messages import messages
from .pipe import pipe
from .relay import relay
from .round_trips import round_trips
from .small_files import small_files
from .startup_latency import latency, startup
from .sync import sync
from .throughput import throughput

SOCAT, NCAT, OPENSSL = ["socat", "-V"], ["ncat", "--version"], ["openssl", "version"]
IPERF3, HYPERFINE = ["iperf3", "--version"], ["hyperfine", "--version"]
TAR, STUNNEL4 = ["tar", "--version"], ["stunnel4", "-version"]
RSYNC, SSH = ["rsync", "--version"], ["ssh", "-V"]
PEERS = (SOCAT, NCAT, OPENSSL, IPERF3, HYPERFINE, TAR, STUNNEL4, RSYNC, SSH)

# Cases that run on their own: (function, title, peers whose versions are shown).
SINGLE = {
    "throughput": (throughput, "throughput", [SOCAT, NCAT, OPENSSL, IPERF3]),
    "small": (small_files, "many small files", [SOCAT, NCAT, TAR, RSYNC, SSH]),
    "forward": (forward, "forward", [SOCAT, STUNNEL4]),
    "pipe": (pipe, "pipe", [SOCAT]),
    "rtt": (round_trips, "round trips", [NCAT, OPENSSL]),
    "latency": (latency, "latency", [NCAT, HYPERFINE]),
    "load": (load, "load", []),
    "sync": (sync, "sync and resume", [RSYNC, SSH]),
    "relay": (relay, "relay", [SOCAT]),
    "messages": (messages, "messages", [SOCAT, NCAT]),
}


def version(argv):
    """One line naming a tool's version, or 'X missing'."""
    if shutil.which(argv[0]) is None:
        return f"{os.path.basename(argv[0])} missing"
    lines = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True).stdout.strip().splitlines()
    name = os.path.basename(argv[0]).rstrip("0123456789") + " "  # stunnel4 says "stunnel 5.68"
    return next((line for line in lines if "version" in line.lower() or "(GNU" in line),
                next((line for line in lines if line.startswith(name)),
                     lines[0] if lines else "?")).strip()


def loadavg():
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(peers, payload, load_before):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    lines = [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- machine: {os.cpu_count()} cores, {cpu}, kernel {platform.release()}; "
             f"load average (1, 5, 15 min) before measuring: {load_before}, after: {loadavg()}",
             f"- pincat: {version([PINCAT, '--version'])}; peers: "
             + ", ".join(version(p) for p in peers)]
    return lines + ([f"- payload: {payload}"] if payload else [])


def summary(outcomes):
    lines = ["## Targets", "", "| measure | this run | target | |", "|---|---:|---|---|"]
    lines += [f"| {md(what)} | {shown} | {goal} | {met} |" for what, shown, goal, met in outcomes]
    return lines + ["", "Ratios are pincat's advantage over the tool (above 1: pincat is "
                    "better); the sections below have every figure.", ""]


def write(text):
    with open(OUT, "w") as f:
        f.write(text)
    log(f"wrote {OUT}")


def main_full():
    build()
    ctx = context()
    load_before = loadavg()
    sections, outcomes = [], []
    for case in (throughput, startup, latency, load, small_files, forward, pipe, round_trips,
                 sync, relay, messages):
        lines, out = case(ctx)
        sections += lines
        outcomes += out
    payload = (f"{SIZE_MB} MiB for throughput, {FWD_MB} MiB for forward, {PIPE_MB} MiB each way "
               f"for pipe, {REPS} {plural(REPS, 'repetition')} for throughput, small files, "
               f"forward, pipe and sync, {RTT_RUNS} for round trips, {RESUME_MB} MiB for resume")
    text = "\n".join(["# pincat benchmarks", "",
                      "Produced by `scripts/bench`; figures are medians unless stated.", ""]
                     + machine(PEERS, payload, load_before) + [""]
                     + summary(outcomes) + sections)
    print(text)
    write(text)


def main_single(mode):
    case, title, peers = SINGLE[mode]
    build(loadgen=mode == "load")
    ctx = context()
    load_before = loadavg()
    lines, outcomes = case(ctx)
    text = "\n".join([f"# pincat benchmarks: {title}", "",
                      f"Produced by `scripts/bench {mode}`; figures are medians.", ""]
                     + machine(peers, None, load_before) + [""]
                     + (summary(outcomes) if outcomes else []) + lines)
    print(text)
    if "BENCH_OUT" in os.environ:
        write(text)


def main(args):
    if len(args) == 1 and args[0] in SINGLE:
        main_single(args[0])
    elif args:
        sys.exit(f"usage: scripts/bench [{'|'.join(SINGLE)}]")
    else:
        main_full()
