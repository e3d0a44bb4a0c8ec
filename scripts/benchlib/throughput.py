"""Case 1, throughput: one random file on tmpfs moved over loopback into
tmpfs by every tool, and by pincat along each of its data paths."""

import contextlib
import json
import os
import subprocess
import time

from .common import (REFERENCE, REPS, SHM, SIZE_MB, TIMEOUT, advantage, fill, fmt, judge, log,
                     md, med, plural, repeated, skipped_rows, usable)
from .procs import (cpu_of, free_ports, gnu_time, read_rss, reap, remove, sha256_file, stop,
                    terminate, vm_hwm, wait_listening, warm_free_memory, with_rss, write_payload)
from .tools import case_tools, skipped_outcomes

EXPLAINED = (
    "MB/s is the payload size over the wall time from starting the sender (the "
    "receiver already listens) until both have exited; iperf3's is the "
    "rate it reports. CPU s/GiB is user+sys of both processes per GiB moved (from "
    "wait4; it includes GNU time's own start, about a millisecond per side), peak "
    "RSS each side's maximum resident set (GNU time). Figures are "
    "medians over the intact runs. Advantage is how many times better pincat is: "
    "its MB/s over the tool's, the tool's CPU-seconds over pincat's (above 1: "
    "pincat is better).")

DATA_PATHS = (
    "pincat has a row per data path, all in the default mode (the listener's code proved "
    "first): `pincat` is files mode (`serve --out DIR` <- `send SRC`); `pincat stdout` a "
    "stream into the receiver's stdout (`serve > FILE` <- `send < SRC`); `pincat stdin pipe` "
    "a stream from a pipe (`cat SRC | send` -> `serve --out FILE`; cat's and sh's CPU "
    "counted); `pincat --raw` unframed TLS (`serve --raw --out FILE` <- `send --raw SRC`); "
    "`pincat pipe` one direction of `pipe` (`pipe --listen > FILE` with an empty stdin <- "
    "`pipe < SRC`); `pincat forward` the plain socat TCP row's two commands joined by a "
    "forwarding pair (`socat -u FILE:SRC TCP:LOCAL` -> `forward --local LOCAL` -> TLS -> "
    "`forward --listen --allow CLIENT_FP` -> `socat -u TCP-LISTEN:SINK CREATE:FILE`, both "
    "ends with identities, started before the clock and stopped with SIGTERM after it; CPU "
    "of all four processes, peak RSS the two ends' VmHWM). The target on `pincat stdout` "
    "holds the stream to files mode: at least 0.95x its MB/s.")


def start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
    """A child in its own session, so a failed side is killed with whatever
    it started (GNU time's child, a shell's pipeline)."""
    return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def run_transfer(tool, ctx, time_path):
    """One transfer: starts the receiver and any relays, waits until all
    listen, then times from starting the sender until it and the receiver
    have exited. Returns seconds, CPU (user+sys of every process, from
    wait4), peak RSS of each side (GNU time; the relays' own with relays),
    exit codes and, for a self-reporting tool, its reported MB/s."""
    ctx = dict(ctx, **dict(zip(tool.ports, free_ports(len(tool.ports)))))
    recv, rss_r = with_rss(fill(tool.receiver, ctx), time_path, "recv")
    send, rss_s = with_rss(fill(tool.sender, ctx), time_path, "send")
    result = tool.result.format(**ctx) if tool.result else None
    for p in (result, ctx["dst"], ctx["out"], rss_r, rss_s):
        if p:
            remove(p)
    warm_free_memory(int(ctx["size"]))
    report = os.path.join(SHM, "sender.out")
    rs = {"seconds": None, "result": result}
    with contextlib.ExitStack() as files:
        def file(template, mode):
            return files.enter_context(open(template.format(**ctx), mode))
        rout = file(tool.receiver_stdout, "wb") if tool.receiver_stdout else subprocess.DEVNULL
        rin = subprocess.PIPE if tool.receiver_stdin_open else subprocess.DEVNULL
        procs = [start(recv, rin, rout)] + [start(fill(r, ctx)) for r in tool.relays]
        sin = file(tool.sender_stdin, "rb") if tool.sender_stdin else subprocess.DEVNULL
        sout = file(report, "wb") if tool.self_report else subprocess.DEVNULL
        peaks = timed(rs, procs, lambda: start(send, sin, sout), [ctx[k] for k in tool.ports])
    rss = peaks if tool.relays else [read_rss(rss_r), read_rss(rss_s)]
    rs.update(rss_recv=rss[0], rss_send=rss[1])
    if tool.self_report == "iperf3" and rs["seconds"]:
        with open(report) as f:
            rs["mbps_reported"] = json.load(f)["end"]["sum_received"]["bits_per_second"] / 8e6
    return rs


def timed(rs, procs, start_sender, ports):
    """Waits for the ports, starts the sender, times it and the receiver
    (procs[0]) to their exits, then stops the relays (procs[1:]). Fills rs;
    returns the relays' peak RSS."""
    rp, relays = procs[0], procs[1:]
    sp, rus = None, [None, None]
    try:
        for port in ports:
            wait_listening(port)
        t0 = time.perf_counter()
        sp = start_sender()
        rus[1] = reap(sp, TIMEOUT)
        rus[0] = reap(rp, TIMEOUT)
        rs["seconds"] = time.perf_counter() - t0
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        rs["error"] = str(e)
    finally:
        rus = [ru or stop(p, group=True) for ru, p in zip(rus, (rp, sp))]
        peaks = [vm_hwm(p.pid) for p in relays]
        relay_rus = [terminate(p) for p in relays]
    rs.update(cpu=cpu_of(*rus, *relay_rus), sides=[r and (r.ru_utime, r.ru_stime) for r in rus],
              sender_rc=sp and sp.returncode, receiver_rc=rp.returncode)
    return peaks


def transfer(tool, ctx, time_path, size, want):
    """One checked run: run_transfer, then what arrived against the source."""
    try:
        r = run_transfer(tool, ctx, time_path)
    except (OSError, ValueError, KeyError) as e:
        r = {"seconds": None, "error": str(e)}
    if tool.self_report:
        r["intact"] = None
    else:
        r["intact"] = (r.get("seconds") is not None and not r.get("sender_rc")
                       and os.path.isfile(r["result"])
                       and os.path.getsize(r["result"]) == size
                       and sha256_file(r["result"]) == want)
    if r.get("seconds") and not r.get("error") and r["intact"] is not False:
        sides = " ".join(f"{w} user {u:.2f} sys {k:.2f}" for w, (u, k) in
                         zip(("receiver", "sender"), r["sides"]) if (u, k))
        log(f"  {size / r['seconds'] / 1e6:.0f} MB/s; CPU s: {sides}")
    return r


def throughput(ctx):
    """Runs case 1; returns its Markdown lines and target outcomes."""
    size = SIZE_MB << 20
    src = os.path.join(SHM, "payload.bin")
    want = write_payload(src, size)
    ctx = dict(ctx, src=src, dst=os.path.join(SHM, "received.bin"),
               out=os.path.join(SHM, "recv-dir"), size=str(size))
    tools, skipped = case_tools("throughput")
    time_path = gnu_time()
    if time_path is None:
        log("throughput: GNU time missing: peak RSS not measured")
    # The warm-up is there because the first big tmpfs write of a run is
    # often slow (page allocation, reclaim), whoever does it.
    runs = repeated("throughput", tools, lambda t: transfer(t, ctx, time_path, size, want),
                    lambda r: r.get("error") or ("what arrived differs"
                                                 if r["intact"] is False else None))
    for p in (src, ctx["dst"], ctx["out"]):
        remove(p)
    return throughput_report(tools, skipped, runs, size)


def figures(tool, runs, size):
    """{metric: median} over the intact runs (all runs when none was intact),
    the intact and the used runs, and the per-run text."""
    good, used = usable(runs, lambda r: r.get("seconds") and r["intact"] is not False)
    gib = size / (1 << 30)
    if tool.self_report:
        mbps = med([r.get("mbps_reported") for r in used])
    else:
        mbps = size / 1e6 / med([r["seconds"] for r in used]) if used else None
    values = {"MB/s": mbps, "CPU s/GiB": med([r["cpu"] / gib for r in used]),
              "peak RSS MiB": max([max(r.get("rss_recv") or 0, r.get("rss_send") or 0)
                                   for r in used] or [0]) or None}

    def one(r):
        if not r.get("seconds"):
            return "failed"
        rate = r.get("mbps_reported") or size / 1e6 / r["seconds"]
        return f"{rate:.0f} MB/s {r['cpu'] / gib:.2f} CPU-s/GiB" + (
            " (bad)" if r["intact"] is False else "")
    note = "runs: " + ", ".join(one(r) for r in runs) + "."
    bad = sum(1 for r in runs if r["intact"] is False or not r.get("seconds"))
    if bad:
        note += f" **lost, corrupted or failed in {bad} of {len(runs)} runs**"
        if not good and used:
            note += " (figures over all runs)"
    return values, good, used, note


def throughput_report(tools, skipped, runs, size):
    values, rows, outcomes = {}, [], []
    for tool in tools:
        values[tool.name], good, used, note = figures(tool, runs[tool.name], size)
        rss = (f"{max([r.get('rss_recv') or 0 for r in used] or [0]):.0f} / "
               f"{max([r.get('rss_send') or 0 for r in used] or [0]):.0f}") if used else "-"
        intact = "n/a" if tool.self_report else f"{len(good)}/{len(runs[tool.name])}"
        rows.append((tool, rss, intact, "; ".join(x for x in (tool.note, note) if x)))
    ref = values.get(REFERENCE, {})
    lines = ["## Throughput", "",
             f"{SIZE_MB} MiB random file on tmpfs, receiver writing to tmpfs, loopback, "
             f"{REPS} {plural(REPS, 'repetition')} per tool, tool order rotated each "
             "repetition, one discarded warm-up.", "",
             "| tool | MB/s | CPU s/GiB | peak RSS MiB recv / send | intact | "
             "pincat advantage MB/s | pincat advantage CPU | target | met | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for tool, rss, intact, note in rows:
        f = values[tool.name]
        adv = [advantage(m, ref.get(m), f.get(m)) for m in ("MB/s", "CPU s/GiB")]
        goal, met, out = judge(tool, values, "throughput")
        outcomes += out
        lines.append(f"| {md(tool.name)} | {fmt(f['MB/s'], 0)} | {fmt(f['CPU s/GiB'], 2)} | {rss} "
                     f"| {intact} | {fmt(adv[0], 2, 'x')} | {fmt(adv[1], 2, 'x')} | {goal} "
                     f"| {met} | {md(note)} |")
    lines += skipped_rows(skipped, 10)
    outcomes += skipped_outcomes("throughput", "throughput", skipped)
    return lines + ["", EXPLAINED, "", DATA_PATHS, ""], outcomes
