"""Case 7, pipe: random bytes both ways at once through `pincat pipe` and
through a socat pair, each side's stdin and stdout files on tmpfs."""

import contextlib
import os
import subprocess
import time

from .common import (PIPE_MB, REFERENCE, REPS, SHM, TIMEOUT, advantage, fill, fmt, md, med,
                     plural, repeated, skipped_rows, usable)
from .procs import (cpu_of, free_port, remove, sha256_file, stop, tail, try_reap, vm_hwm,
                    wait_listening, warm_free_memory, write_payload)
from .tools import case_tools, skipped_outcomes

EXPLAINED = (
    "`pincat pipe --listen 127.0.0.1:P --identity ID --code CODE` and `pincat pipe "
    "127.0.0.1:P --pin FP --code CODE`; `socat -b 131072 -t 30 "
    "OPENSSL-LISTEN:P,cert,key,verify=0 STDIO` and "
    "`socat -b 131072 -t 30 STDIO OPENSSL:127.0.0.1:P,verify=0`; each side's stdin "
    "is its own random file and its stdout a file. The clock starts as the dialer is "
    "started (the listener already listens). A direction's MB/s is its payload over "
    "the time until its output file reached the full size (polled every 2 ms); both "
    "ways is the two payloads over the time until both processes exited. CPU is "
    "user+sys of both processes per GiB moved, both directions counted (2 x "
    "{mb} MiB). Peak RSS is each process's VmHWM, sampled every 20 ms. Intact: "
    "both outputs match the other side's input by sha256 and both processes exit 0 "
    "(pincat's 0 means both directions ended with close_notify). Cipher suites: "
    "TLS_AES_128_GCM_SHA256 between pincat's ends, TLS_AES_256_GCM_SHA384 (OpenSSL's "
    "default) between socat's.")


def mark_complete(r, outs, size, elapsed):
    """Records `elapsed` as the time of each direction whose output file just
    reached the full size."""
    for i, path in enumerate(outs):
        if r["dir"][i] is None and os.path.getsize(path) >= size:
            r["dir"][i] = elapsed


def watch(procs, outs, size, t0, r):
    """Polls every 2 ms until both processes have exited: when each output
    file reached `size` (into r["dir"]), each process's peak RSS (every
    20 ms). Returns (rusages, peak RSS of each)."""
    rus, rss = [None, None], [None, None]
    tick = 0
    while None in rus:
        now = time.monotonic()
        mark_complete(r, outs, size, now - t0)
        for i, p in enumerate(procs):
            if rus[i] is None:
                if tick % 10 == 0:
                    rss[i] = vm_hwm(p.pid) or rss[i]
                rus[i] = try_reap(p)
        if now > t0 + TIMEOUT:
            raise subprocess.TimeoutExpired("pipe", TIMEOUT)
        tick += 1
        time.sleep(0.002)
    return rus, rss


def run_pipe(tool, ctx, size, wants):
    """Both directions at once: the listener reads {src} and writes what the
    dialer sent to one file, the dialer reads {src2} and writes to another.
    The clock starts as the dialer is started (the listener already listens);
    each direction's time is when its output file reached the full size, the
    total when both processes have exited."""
    ctx = dict(ctx, port=free_port())
    outs = [os.path.join(SHM, f"pipe-{side}.out") for side in ("listener", "dialer")]
    for p in outs:
        remove(p)
    warm_free_memory(2 * size)
    err = os.path.join(SHM, "pipe.err")
    r = {"seconds": None, "dir": [None, None], "rss": [None, None]}
    procs, rus = [], [None, None]
    with contextlib.ExitStack() as files:
        e = files.enter_context(open(err, "wb"))

        def start(argv, src, out):
            procs.append(subprocess.Popen(
                fill(argv, ctx), stdin=files.enter_context(open(src, "rb")),
                stdout=files.enter_context(open(out, "wb")), stderr=e, start_new_session=True))
        try:
            start(tool.receiver, ctx["src"], outs[0])
            wait_listening(ctx["port"])
            t0 = time.monotonic()
            start(tool.sender, ctx["src2"], outs[1])
            rus, r["rss"] = watch(procs, outs, size, t0, r)
            r["seconds"] = time.monotonic() - t0
            mark_complete(r, outs, size, r["seconds"])
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as ex:
            r["error"] = str(ex)
        finally:
            rus = [ru or stop(p, group=True) for ru, p in zip(rus, procs)]
    r.update(cpu=cpu_of(*rus), rcs=[p.returncode for p in procs])
    # The listener's output is the dialer's input and the other way round.
    r["intact"] = [os.path.getsize(o) == size and sha256_file(o) == w
                   if os.path.isfile(o) else False for o, w in zip(outs, wants)]
    r["ok"] = all(r["intact"]) and not any(r["rcs"]) and r["seconds"] is not None
    if not r["ok"]:
        r["stderr"] = tail(err)
    for p in outs:
        remove(p)
    return r


def pipe_failure(r):
    if r["ok"]:
        return None
    return (f"{r.get('error') or ''} intact {r['intact']} exit codes {r['rcs']} "
            f"{r.get('stderr', '')}")


def pipe(ctx):
    """Runs case 7; returns its Markdown lines and target outcomes."""
    size = PIPE_MB << 20
    srcs = [os.path.join(SHM, f"pipe-{side}.in") for side in ("listener", "dialer")]
    # What the listener receives is what the dialer reads, and back.
    wants = list(reversed([write_payload(p, size) for p in srcs]))
    ctx = dict(ctx, src=srcs[0], src2=srcs[1])
    tools, skipped = case_tools("pipe")
    try:
        runs = repeated("pipe", tools, lambda t: run_pipe(t, ctx, size, wants), pipe_failure)
    finally:
        for p in srcs:
            remove(p)
    return pipe_report(tools, skipped, runs, size)


def pipe_row(tool, rs, size):
    """({metric: median}, peak RSS of each side, intact text, note) of one tool."""
    gib = 2 * size / (1 << 30)
    good, used = usable(rs, lambda r: r["ok"])

    def rate(secs, k=1):
        return k * size / 1e6 / secs if secs else None
    values = {"to dialer": rate(med([r["dir"][1] for r in used])),
              "to listener": rate(med([r["dir"][0] for r in used])),
              "MB/s": rate(med([r["seconds"] for r in used]), 2),
              "CPU s/GiB": med([r["cpu"] / gib for r in used])}
    rss = [max([r["rss"][i] or 0 for r in used] or [0]) or None for i in (0, 1)]
    each = ", ".join(
        f"{fmt(rate(r['dir'][1]), 0)} / {fmt(rate(r['dir'][0]), 0)} / "
        f"{fmt(rate(r['seconds'], 2), 0)} MB/s {r['cpu'] / gib:.2f}"
        + ("" if r["ok"] else " (bad)") if r.get("seconds") else "failed" for r in rs)
    note = [tool.note + (";" if tool.note else ""),
            f"runs (to dialer / to listener / both, CPU-s/GiB): {each}."]
    bad = [r for r in rs if not r["ok"]]
    if bad:
        why = "; ".join(sorted({f"exit codes {r['rcs']}, intact {r['intact']}"
                                + (f", {r['error']}" if r.get("error") else "")
                                + (f", stderr: {r['stderr']}" if r.get("stderr") else "")
                                for r in bad}))
        note.append(f"**failed in {len(bad)} of {len(rs)} runs: {why[:500]}**")
    return values, rss, f"{len(good)}/{len(rs)}", " ".join(n for n in note if n)


def pipe_report(tools, skipped, runs, size):
    values, rows = {}, []
    for tool in tools:
        values[tool.name], rss, intact, note = pipe_row(tool, runs[tool.name], size)
        rows.append((tool, rss, intact, note))
    ref = values.get(REFERENCE, {})
    lines = ["## Pipe", "",
             f"{PIPE_MB} MiB of random bytes each way at the same time (stdin files and stdout "
             f"files on tmpfs), loopback, {REPS} {plural(REPS, 'repetition')} per tool, order "
             "rotated each repetition, one discarded warm-up.", "",
             "| tool | MB/s listener -> dialer | MB/s dialer -> listener | MB/s both ways | "
             "CPU s/GiB | peak RSS MiB listener / dialer | intact | pincat advantage MB/s | "
             "pincat advantage CPU | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for tool, rss, intact, note in rows:
        v = values[tool.name]
        adv = [advantage(m, ref.get(m), v.get(m)) for m in ("MB/s", "CPU s/GiB")]
        lines.append(f"| {md(tool.name)} | {fmt(v['to dialer'], 0)} | "
                     f"{fmt(v['to listener'], 0)} | {fmt(v['MB/s'], 0)} | "
                     f"{fmt(v['CPU s/GiB'], 2)} | {fmt(rss[0], 1)} / {fmt(rss[1], 1)} | {intact} "
                     f"| {fmt(adv[0], 2, 'x')} | {fmt(adv[1], 2, 'x')} | {md(note)} |")
    lines += skipped_rows(skipped, 10)
    return (lines + ["", EXPLAINED.format(mb=PIPE_MB), ""],
            skipped_outcomes("pipe", "pipe", skipped))
