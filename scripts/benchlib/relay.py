"""Case 10, relay: one stream of RELAY_MB MiB from `pincat send` to `pincat
serve` on loopback, directly, through a plain TCP forwarder (socat), through
`pincat relay` and through the PyPI magic-wormhole transit relay; the
relay's own CPU per GiB beside the throughput. Target: through `pincat
relay` at least 0.9x the MB/s through the forwarder (the cost of any extra
hop on this machine)."""

import json
import os
import shutil
import subprocess
import time

from .common import PINCAT, REPS, SHM, TIMEOUT, fmt, log, med, rotated
from .procs import (cpu_of, free_port, reap, remove, sha256_file, stop, terminate,
                    wait_listening, warm_free_memory, write_payload)

RELAY_MB = int(os.environ.get("BENCH_RELAY_MB", "1024"))
TOOLS = ["direct", "socat forwarder", "pincat relay", "transit relay (PyPI)"]
TARGET = 0.9


def twist():
    """The PyPI transit relay's `twist`: $PINCAT_TWIST, else on the PATH."""
    path = os.environ.get("PINCAT_TWIST")
    if path and os.path.exists(path):
        return path
    return shutil.which("twist")


def proc_cpu(pid):
    """User+system CPU seconds of a live process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_relays():
    """pincat relay and (when installed) the transit relay on loopback:
    {tool: (process, address)}."""
    relays = {}
    port = free_port()
    p = subprocess.Popen([PINCAT, "relay", "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    relays["pincat relay"] = (p, f"127.0.0.1:{port}")
    tw = twist()
    if tw:
        port = free_port()
        p = subprocess.Popen([tw, "transitrelay", f"--port=tcp:{port}:interface=127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(port)
        relays["transit relay (PyPI)"] = (p, f"127.0.0.1:{port}")
    return relays


def listening_event(serve):
    line = serve.stderr.readline()
    event = json.loads(line)
    assert event.get("event") == "listening", line
    return event


def one(tool, relays, payload, want):
    """One transfer through `tool`: seconds, MB/s, the relay's CPU, intact."""
    out = os.path.join(SHM, "relay-received.bin")
    remove(out)
    warm_free_memory(RELAY_MB << 20)
    argv = [PINCAT, "serve", "--json", "--out", out]
    port = free_port()
    if tool in relays:
        argv += ["--via", relays[tool][1]]
    else:
        argv += ["--listen", f"127.0.0.1:{port}"]
    serve = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    ev = listening_event(serve)
    target = ["--via", ev["via"]] if tool in relays else [f"127.0.0.1:{port}"]
    fwd = None
    if tool == "socat forwarder":
        fport = free_port()
        fwd = subprocess.Popen(["socat", "-b", "1048576", f"TCP-LISTEN:{fport},bind=127.0.0.1,"
                                "reuseaddr", f"TCP:127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(fport)
        target = [f"127.0.0.1:{fport}"]
    relay_pid = relays[tool][0].pid if tool in relays else None
    cpu0 = proc_cpu(relay_pid) if relay_pid else 0.0
    with open(payload, "rb") as f:
        start = time.monotonic()
        send = subprocess.Popen([PINCAT, "send", *target, "--pin", ev["fingerprint"],
                                 "--code", ev["code"]], stdin=f, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        ru_send = reap(send, TIMEOUT)
        ru_serve = reap(serve, TIMEOUT)
    seconds = time.monotonic() - start
    relay_cpu = proc_cpu(relay_pid) - cpu0 if relay_pid else None
    if fwd is not None:
        try:
            relay_cpu = cpu_of(reap(fwd, 30))
        except subprocess.TimeoutExpired:
            relay_cpu = cpu_of(stop(fwd))
    ok = send.returncode == 0 and serve.returncode == 0 and sha256_file(out) == want
    remove(out)
    gib = RELAY_MB / 1024
    return {"seconds": seconds, "mbps": (RELAY_MB << 20) / seconds / 1e6, "ok": ok,
            "relay_cpu": relay_cpu / gib if relay_cpu is not None else None,
            "ends_cpu": cpu_of(ru_send, ru_serve) / gib}


def relay(ctx):
    del ctx
    payload = os.path.join(SHM, "relay-payload.bin")
    write_payload(payload, RELAY_MB << 20)
    want = sha256_file(payload)
    relays = start_relays()
    tools = [t for t in TOOLS if t in relays or t in ("direct", "socat forwarder")]
    runs = {t: [] for t in tools}
    try:
        log("relay: warm-up (discarded): pincat relay")
        one("pincat relay", relays, payload, want)
        for rep in range(REPS):
            for t in rotated(tools, rep):
                log(f"relay: rep {rep + 1}/{REPS}: {t}")
                r = one(t, relays, payload, want)
                if not r["ok"]:
                    log("  FAILED")
                runs[t].append(r)
    finally:
        for p, _ in relays.values():
            terminate(p)
        remove(payload)
    return report(tools, runs)


def report(tools, runs):
    good = {t: [r for r in runs[t] if r["ok"]] for t in tools}
    mbps = {t: med([r["mbps"] for r in good[t]]) for t in tools}
    fwd = mbps.get("socat forwarder")
    lines = ["## Relay", "",
             f"One {RELAY_MB} MiB random stream from tmpfs, `pincat send < FILE` into `pincat "
             f"serve --out FILE` on tmpfs, over loopback: directly, through `socat -b 1048576 "
             f"TCP-LISTEN TCP` (a plain forwarder, one process per run), through `pincat relay` "
             f"and through the PyPI transit relay (`twist transitrelay`), both started once for "
             f"the case; {REPS} repetitions, order rotated, one discarded warm-up.", "",
             "| path | MB/s | relay CPU s/GiB | both ends' CPU s/GiB | intact | / forwarder MB/s "
             "| runs (MB/s) |", "|---|---:|---:|---:|---:|---:|---|"]
    for t in tools:
        ratio = mbps[t] / fwd if mbps[t] and fwd else None
        lines.append(
            f"| {t} | {fmt(mbps[t], 0)} | {fmt(med([r['relay_cpu'] for r in good[t]]), 2)} | "
            f"{fmt(med([r['ends_cpu'] for r in good[t]]), 2)} | {len(good[t])}/{len(runs[t])} | "
            f"{fmt(ratio, 2, 'x')} | "
            + ", ".join(f"{r['mbps']:.0f}{'' if r['ok'] else ' (bad)'}" for r in runs[t]) + " |")
    ours = mbps.get("pincat relay")
    got = ours / fwd if ours and fwd else None
    met = "met" if got is not None and got >= TARGET else "**missed**"
    lines += ["", "MB/s is the stream's size over the wall time from starting the sender (the "
              "receiver already listening, or registered at the relay) until both have exited "
              "with the file written; relay CPU is the relay process's user+system time during "
              "the run (the forwarder's, from wait4), per GiB carried.", ""]
    outcome = ("relay: MB/s through pincat relay vs a socat forwarder",
               f"{fmt(ours, 0)} vs {fmt(fwd, 0)} ({fmt(got, 2, 'x')})",
               f">= {TARGET}x the forwarder's", met)
    return lines, [outcome]
