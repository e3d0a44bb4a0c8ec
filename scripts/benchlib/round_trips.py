"""Case 8, round trips: a 100-byte send through a delay proxy on loopback,
counted in round trips after the TCP connect."""

import os
import socket
import statistics
import subprocess
import time

from .common import (RTT_DELAY, RTT_RUNS, SHM, fill, fmt, judge, log, md, med, skipped_rows)
from .procs import (free_ports, json_line, py, read_line, reap, remove, stop, wait_listening,
                    write_message)
from .tools import case_tools, skipped_outcomes

# The round-trip case's delay proxy: listens on 127.0.0.1:argv[1], connects
# each client to 127.0.0.1:argv[2] and relays both ways, every chunk (and the
# end of input, as a half-close) delivered argv[3] seconds after it was read,
# without delaying the chunks behind it. The TCP handshakes themselves are not
# delayed (the kernel completes them). Per connection it prints its monotonic
# clock at accept, at the client's end of input and at the upstream's.
DELAY_PROXY_PY = r'''
import asyncio, json, socket, sys, time
LISTEN, UPSTREAM, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

def nodelay(w):
    s = w.get_extra_info("socket")
    if s is not None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

async def pump(reader, writer, at_eof):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            try:
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except OSError:
                return

    task = asyncio.create_task(deliver())
    while True:
        try:
            data = await reader.read(1 << 16)
        except OSError:
            data = b""
        queue.put_nowait((loop.time() + DELAY, data or None))
        if not data:
            at_eof()
            break
    await task

async def handle(creader, cwriter):
    rec = {"accepted": time.monotonic()}
    nodelay(cwriter)
    try:
        ureader, uwriter = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError as e:
        cwriter.close()
        print(json.dumps(dict(rec, error=str(e))), flush=True)
        return
    nodelay(uwriter)
    await asyncio.gather(
        pump(creader, uwriter, lambda: rec.setdefault("client_eof", time.monotonic())),
        pump(ureader, cwriter, lambda: rec.setdefault("upstream_eof", time.monotonic())))
    for w in (cwriter, uwriter):
        w.close()
    print(json.dumps(rec), flush=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


EXPLAINED = (
    "Timed from starting the sender to its exit: `pincat send 127.0.0.1:PROXY --pin "
    "FP --quiet --code CODE < msg` (exits on the receipt; receiver `pincat serve --keep-open`), "
    "`ncat --ssl --send-only 127.0.0.1 PROXY < msg` (receiver `ncat --ssl "
    "--keep-open --recv-only -l`) and `openssl s_client -nocommands -connect "
    "127.0.0.1:PROXY < msg` (receiver `openssl s_server -quiet`). Round trips after "
    "connect: (that time - the connect time) / {rt_ms:.0f} ms, so the sender's "
    "own start-up and exit are in it. Seen by the proxy: from accepting the "
    "connection to the client's end of input (its FIN), per round trip. Before the "
    "connect: from starting the sender to the proxy's accept (start-up); FIN to exit: "
    "from the client's FIN reaching the proxy to the process's exit. The proxy "
    "(Python asyncio, in the bench's round_trips.py) sets TCP_NODELAY on both sockets and delivers "
    "each chunk, and each end of input as a half-close, the delay after reading it. "
    "pincat in the default mode proves the listener's code after the handshake: "
    "its share goes out with the client's Finished, the listener's share and "
    "confirmation come back (one round trip more), then the dialer's confirmation, "
    "the offer and the data leave in one flight. The targets are met when the "
    "median is below 3.25 round trips with the code and 2.25 without (`--allow-any`), "
    "i.e. nearest to 3 and 2 at half-round-trip resolution. Every receiver's output "
    "is checked to hold every message.")


def connect_time():
    """Median seconds of a TCP connect on loopback: what a connect through the
    delay proxy costs, since the proxy delays data, not the handshake."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    times = []
    try:
        for _ in range(21):
            c = socket.socket()
            t = time.monotonic()
            c.connect(srv.getsockname())
            times.append(time.monotonic() - t)
            c.close()
    finally:
        srv.close()
    return statistics.median(times)


def proxy_view(proxy, t0):
    """The delay proxy's line for the connection accepted at or after t0
    (its accept and the client's FIN, monotonic), or {} within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = read_line(proxy.stdout, max(0.0, deadline - time.monotonic()))
        if line is None:
            return {}
        got = json_line(line) or {}
        if got.get("accepted", 0) >= t0:
            return got
    return {}


def rtt_run(tool, c, proxy, connect, rt):
    """One send through the proxy: (its figures, or None when it timed out;
    what went wrong, or None)."""
    with open(c["msg"], "rb") as m:
        t0 = time.monotonic()
        sp = subprocess.Popen(fill(tool.sender, c), stdin=m, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
        try:
            reap(sp, 30)
        except subprocess.TimeoutExpired:
            stop(sp, group=True)
            return None, "sender timed out"
    t1 = time.monotonic()
    stderr = sp.stderr.read().decode(errors="replace").strip()
    sp.stderr.close()
    seen = proxy_view(proxy, t0)
    run = {"ms": (t1 - t0) * 1000, "rt": (t1 - t0 - connect) / rt, "ok": sp.returncode == 0}
    if "accepted" in seen and "client_eof" in seen:
        run.update(proxy_rt=(seen["client_eof"] - seen["accepted"]) / rt,
                   before_ms=(seen["accepted"] - t0) * 1000,
                   after_ms=(t1 - seen["client_eof"]) * 1000)
    return run, f"exit {sp.returncode}: {stderr[-200:]}" if sp.returncode else None


def start_server(tool, c):
    """The keep-open receiver, its stdout into {dst}, listening."""
    with open(c["dst"], "wb") as out:
        server = subprocess.Popen(
            fill(tool.receiver, c), stdout=out, stderr=subprocess.DEVNULL,
            stdin=subprocess.PIPE if tool.receiver_stdin_open else subprocess.DEVNULL,
            start_new_session=True)
    wait_listening(c["port"])
    return server


def start_proxy(c):
    """The delay proxy in front of the receiver, listening; its lines on stdout."""
    proxy = subprocess.Popen(py(DELAY_PROXY_PY, c["proxy"], c["port"], RTT_DELAY),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0,
                             start_new_session=True)
    wait_listening(c["proxy"])
    return proxy


def received_all(path):
    """What went wrong with the receiver's output (every message once per
    run, the discarded one too), or None."""
    time.sleep(0.05)
    try:
        with open(path, "rb") as f:
            got = f.read()
    except OSError:
        got = b""
    want = b"m" * 100 * (RTT_RUNS + 1)
    return f"the receiver got {len(got)} bytes, not {len(want)}" if got != want else None


def rtt_tool(tool, ctx, connect, rt):
    """RTT_RUNS timed sends after one discarded, against a receiver and a
    proxy started for this tool. Returns {"runs", "errors"}."""
    port, proxy_port = free_ports(2)
    c = dict(ctx, port=port, proxy=proxy_port, dst=os.path.join(SHM, "rtt-received"))
    remove(c["dst"])
    server = proxy = None
    runs, errors = [], []
    try:
        server = start_server(tool, c)
        proxy = start_proxy(c)
        for i in range(RTT_RUNS + 1):  # the first is discarded
            run, error = rtt_run(tool, c, proxy, connect, rt)
            errors += [error] if error else []
            if run and i:
                runs.append(run)
    except (RuntimeError, OSError, ValueError) as e:
        errors.append(str(e))
    finally:
        for p in (proxy, server):
            if p:
                stop(p, group=True)
        if proxy:
            proxy.stdout.close()
    errors += [e for e in (received_all(c["dst"]),) if e]
    remove(c["dst"])
    return {"runs": runs, "errors": errors}


def round_trips(ctx):
    """Runs case 8; returns its Markdown lines and target outcomes."""
    rt = 2 * RTT_DELAY
    ctx = dict(ctx, msg=write_message())
    tools, skipped = case_tools("round trips")
    connect = connect_time()
    results = {}
    for tool in tools:
        log(f"round trips: {tool.name}")
        results[tool.name] = rtt_tool(tool, ctx, connect, rt)
    return rtt_report(tools, skipped, results, connect, rt)


def rtt_row(tool, res):
    """({figure: median}, per-run text, note) of one tool."""
    rs = [r for r in res["runs"] if r["ok"]] or res["runs"]
    values = {"ms": med([r["ms"] for r in rs]), "round trips": med([r["rt"] for r in rs]),
              "proxy": med([r.get("proxy_rt") for r in rs]),
              "before": med([r.get("before_ms") for r in rs]),
              "after": med([r.get("after_ms") for r in rs])}
    note = tool.note
    if res["errors"]:
        note += " **" + "; ".join(sorted(set(res["errors"])))[:400] + "**"
    each = ", ".join(f"{r['rt']:.2f}" + ("" if r["ok"] else " (failed)") for r in res["runs"])
    return values, each or "-", note


def rtt_report(tools, skipped, results, connect, rt):
    values, outcomes = {}, []
    lines = ["## Round trips", "",
             f"A 100-byte message through a delay proxy on loopback that delays every chunk by "
             f"{RTT_DELAY * 1000:.0f} ms each way (one round trip: {rt * 1000:.0f} ms), against "
             f"a keep-open receiver started once; {RTT_RUNS} timed runs per tool after one "
             f"discarded run, figures are medians. A TCP connect costs {connect * 1000:.3f} ms "
             "here (the proxy delays data, not the TCP handshake).", "",
             "| tool | ms start to exit | round trips after connect | round trips seen by the "
             "proxy | ms before the connect | ms from FIN to exit | target | met | runs (round "
             "trips) | note |",
             "|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    for tool in tools:
        v, each, note = rtt_row(tool, results[tool.name])
        values[tool.name] = v
        goal, met, out = judge(tool, values, "round trips")
        outcomes += out
        lines.append(f"| {md(tool.name)} | {fmt(v['ms'], 1)} | {fmt(v['round trips'], 2)} | "
                     f"{fmt(v['proxy'], 2)} | {fmt(v['before'], 1)} | {fmt(v['after'], 1)} | "
                     f"{goal} | {met} | {each} | {md(note)} |")
    lines += skipped_rows(skipped, 10)
    outcomes += skipped_outcomes("round trips", "round trips", skipped)
    return lines + ["", EXPLAINED.format(rt_ms=rt * 1000), ""], outcomes
