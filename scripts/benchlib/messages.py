"""Case 11, messages: MSG_COUNT messages of MSG_BYTES each, from MSG_SENDERS
concurrent senders (one process per message), each handed to `/bin/cat` by
the receiver: `pincat serve --keep-open --exec /bin/cat` (each sender exits
0 only once cat exited 0, with cat's output, the message, as its reply:
confirmed and checked here), against `ncat --ssl -k -l -e /bin/cat` and
`socat OPENSSL-LISTEN,fork EXEC:/bin/cat` (whose senders, `ncat --ssl
--send-only` and `socat -u`, exit once they sent: nothing is confirmed).
Tools alternate within the run. Then the latency of one confirmed request
and reply through pincat (median of MSG_LATENCY_RUNS), beside socat's
unconfirmed round trip (`socat - OPENSSL`, which reads cat's output until
the server closes)."""

import os
import secrets
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from .common import PINCAT, REPS, SHM, TIMEOUT, fmt, log, med, rotated
from .procs import free_port, terminate, wait_listening

MSG_COUNT = int(os.environ.get("BENCH_MSG_COUNT", "400"))
MSG_BYTES = int(os.environ.get("BENCH_MSG_BYTES", "1024"))
MSG_SENDERS = int(os.environ.get("BENCH_MSG_SENDERS", "4"))
LATENCY_RUNS = int(os.environ.get("BENCH_MSG_LATENCY_RUNS", "50"))
TOOLS = ["pincat --exec", "ncat -k -e", "socat fork EXEC"]
NEEDS = {"pincat --exec": [], "ncat -k -e": ["ncat", "openssl"],
         "socat fork EXEC": ["socat", "openssl"]}


def start_server(tool, ctx, port):
    """The receiver of `tool` on 127.0.0.1:port, running /bin/cat per message."""
    if tool == "pincat --exec":
        argv = [PINCAT, "serve", "--listen", f"127.0.0.1:{port}", "--keep-open", "--quiet",
                "--identity", ctx["ident"], "--code", ctx["code"], "--exec", "/bin/cat"]
    elif tool == "ncat -k -e":
        argv = ["ncat", "--ssl", "--ssl-cert", ctx["cert"], "--ssl-key", ctx["key"], "-k", "-l",
                "127.0.0.1", str(port), "-e", "/bin/cat"]
    else:
        argv = ["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,"
                f"cert={ctx['cert']},key={ctx['key']},verify=0", "EXEC:/bin/cat"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, PINCAT_STATE_DIR=SHM))
    wait_listening(port)
    return p


def sender(tool, ctx, port):
    if tool == "pincat --exec":
        return [PINCAT, "send", f"127.0.0.1:{port}", "--pin", ctx["pin"], "--code",
                ctx["code"], "--quiet"]
    if tool == "ncat -k -e":
        return ["ncat", "--ssl", "--send-only", "127.0.0.1", str(port)]
    return ["socat", "-u", "STDIN", f"OPENSSL:127.0.0.1:{port},verify=0"]


def one_message(argv, msg, confirmed):
    """Sends one message; for pincat, True only if its reply is the message."""
    r = subprocess.run(argv, input=msg, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       timeout=TIMEOUT)
    return r.returncode == 0 and (not confirmed or r.stdout == msg)


def burst(tool, ctx):
    """MSG_COUNT messages from MSG_SENDERS workers: (messages/s, confirmed count)."""
    port = free_port()
    server = start_server(tool, ctx, port)
    argv = sender(tool, ctx, port)
    confirmed = tool == "pincat --exec"
    msgs = [secrets.token_bytes(MSG_BYTES) for _ in range(MSG_COUNT)]
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(MSG_SENDERS) as pool:
            oks = list(pool.map(lambda m: one_message(argv, m, confirmed), msgs))
        seconds = time.monotonic() - start
    finally:
        terminate(server)
    return {"rate": MSG_COUNT / seconds, "ok": sum(oks), "confirmed": sum(oks) if confirmed else 0}


def latency(tool, ctx):
    """Milliseconds of one request and its reply (median of LATENCY_RUNS,
    after one discarded), and how many came back whole."""
    port = free_port()
    server = start_server(tool, ctx, port)
    if tool == "pincat --exec":
        argv = sender(tool, ctx, port)
    else:
        argv = ["socat", "-", f"OPENSSL:127.0.0.1:{port},verify=0"]
    times, whole = [], 0
    try:
        for i in range(LATENCY_RUNS + 1):
            msg = secrets.token_bytes(100)
            start = time.monotonic()
            r = subprocess.run(argv, input=msg, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=TIMEOUT)
            ms = (time.monotonic() - start) * 1000
            if i == 0:
                continue
            times.append(ms)
            whole += r.returncode == 0 and r.stdout == msg
    finally:
        terminate(server)
    return {"ms": statistics.median(times), "min": min(times), "whole": whole}


def messages(ctx):
    tools = [t for t in TOOLS if all(shutil.which(n) for n in NEEDS[t])]
    skipped = [t for t in TOOLS if t not in tools]
    runs = {t: [] for t in tools}
    log("messages: warm-up (discarded): pincat --exec")
    burst("pincat --exec", ctx)
    for rep in range(REPS):
        for t in rotated(tools, rep):
            log(f"messages: rep {rep + 1}/{REPS}: {t}")
            runs[t].append(burst(t, ctx))
    lat = {}
    for t in ["pincat --exec", "socat fork EXEC"]:
        if t in tools:
            log(f"messages: latency: {t}")
            lat[t] = latency(t, ctx)
    return report(tools, skipped, runs, lat)


def report(tools, skipped, runs, lat):
    lines = ["## Messages", "",
             f"{MSG_COUNT} messages of {MSG_BYTES} random bytes over loopback from "
             f"{MSG_SENDERS} concurrent senders (one process per message), each handed to "
             f"`/bin/cat` by the receiver; {REPS} repetitions, tools alternating, one discarded "
             "warm-up. pincat: `pincat serve --keep-open --code CODE --exec /bin/cat` <- `pincat "
             "send --code CODE`, whose exit 0 means cat exited 0 and whose stdout (the reply, "
             "cat's output) is checked against the message: confirmed. ncat: `ncat --ssl -k -l "
             "-e /bin/cat` <- `ncat --ssl --send-only`; socat: `socat OPENSSL-LISTEN,fork "
             "EXEC:/bin/cat` <- `socat -u STDIN OPENSSL`: their senders exit once the bytes are "
             "written, and nothing is confirmed.", "",
             "| receiver | messages/s | confirmed | sender exit 0 | runs (messages/s) |",
             "|---|---:|---:|---:|---|"]
    for t in tools:
        rs = runs[t]
        lines.append(f"| {t} | {fmt(med([r['rate'] for r in rs]), 0)} | "
                     f"{sum(r['confirmed'] for r in rs)}/{MSG_COUNT * len(rs)} | "
                     f"{sum(r['ok'] for r in rs)}/{MSG_COUNT * len(rs)} | "
                     + ", ".join(f"{r['rate']:.0f}" for r in rs) + " |")
    lines += [f"| {t} | - | - | - | missing: skipped |" for t in skipped]
    lines += ["", f"One 100-byte request and its reply through `/bin/cat` ({LATENCY_RUNS} runs "
              "after one discarded, from starting the sender to its exit): `pincat send` (exit "
              "0 once the handler exited 0, the reply on its stdout) and `socat - OPENSSL` "
              "(reads the reply until the server closes; confirms nothing).", "",
              "| request/reply | median ms | min ms | reply whole |", "|---|---:|---:|---:|"]
    for t, r in lat.items():
        lines.append(f"| {t} | {fmt(r['ms'], 1)} | {fmt(r['min'], 1)} | "
                     f"{r['whole']}/{LATENCY_RUNS} |")
    return lines + [""], []
