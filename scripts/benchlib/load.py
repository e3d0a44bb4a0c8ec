"""Case 4, load: complete small transfers per second from concurrent senders
through the library API (examples/loadgen.rs) against one keep-open serve."""

import json
import os
import subprocess

from .common import LOADGEN, fill
from .procs import free_port, stop, wait_listening
from .tools import SERVE

LOAD_SENDERS, LOAD_SECONDS, LOAD_BYTES = 4, 5, 1024
LOAD_TARGET = 2000  # complete transfers per second, none failed


def run_loadgen(ctx):
    """loadgen's JSON report against a fresh `pincat serve --keep-open`."""
    port = free_port()
    srv = subprocess.Popen(fill(SERVE, dict(ctx, port=port)) + ["--keep-open"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        out = subprocess.run([LOADGEN, f"127.0.0.1:{port}", ctx["pin"], str(LOAD_SENDERS),
                              str(LOAD_SECONDS), str(LOAD_BYTES)], stdout=subprocess.PIPE,
                             text=True, timeout=LOAD_SECONDS + 120, check=True,
                             env=dict(os.environ, PINCAT_LOADGEN_CODE=ctx["code"]))
        return json.loads(out.stdout)
    finally:
        stop(srv)


def load(ctx):
    """Runs case 4; returns its Markdown lines and target outcomes."""
    ld = run_loadgen(ctx)
    ok = ld["per_second"] >= LOAD_TARGET and ld["failed"] == 0
    met = "met" if ok else "**missed**"
    shown = f"{ld['per_second']:.0f}/s ({ld['failed']} failed)"
    what = (f"load: complete {LOAD_BYTES}-byte transfers per second, {LOAD_SENDERS} concurrent "
            "senders")
    lines = ["## Load", "",
             f"`examples/loadgen.rs`: {LOAD_SENDERS} threads, each doing complete transfers "
             f"(handshake, the code, {LOAD_BYTES} bytes, receipt) in a loop through the library "
             f"API for {LOAD_SECONDS} s against one `pincat serve --keep-open`: **{shown}**, "
             f"{ld['transfers']} transfers in {ld['seconds']:.1f} s (target >= {LOAD_TARGET}/s "
             f"with none failed: {met}).", ""]
    return lines, [(what, shown, f">= {LOAD_TARGET}/s, 0 failed", met)]
