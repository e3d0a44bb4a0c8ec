"""Case 6, forward: a random stream from a client through a forwarding pair
into a plaintext sink on loopback (client -> using end -> TLS -> exposing
end -> sink); the client and the sink are the harness's own (Python)."""

import json
import os
import subprocess
import time

from .common import (FWD_MB, REFERENCE, REPS, SHM, TIMEOUT, advantage, fill, fmt, md, med,
                     plural, repeated, skipped_rows, usable)
from .procs import (cpu_of, descendants, free_ports, json_line, py, read_line, reap, remove,
                    sha256_file, stop, tail, terminate, vm_hwm, wait_listening, warm_free_memory,
                    write_payload)
from .tools import case_tools, skipped_outcomes

# The forward case's sink: accepts one connection on 127.0.0.1:argv[1], writes
# what arrives to argv[2], prints bytes and its monotonic clock at accept and
# at end of input (CLOCK_MONOTONIC is one clock for every process).
SINK_PY = r'''
import json, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
c, _ = s.accept()
accepted = time.monotonic()
buf = bytearray(1 << 18)
view = memoryview(buf)
n = 0
with open(sys.argv[2], "wb") as f:
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        f.write(view[:k])
        n += k
eof = time.monotonic()
c.close()
print(json.dumps({"bytes": n, "accepted": accepted, "eof": eof}), flush=True)
'''

# The forward case's client: connects to 127.0.0.1:argv[1], sends the file
# argv[2] with sendfile, half-closes, then waits (argv[3] seconds at most)
# for the close to come back through the tunnel.
CLIENT_PY = r'''
import json, socket, sys, time
start = time.monotonic()
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
with open(sys.argv[2], "rb") as f:
    sent = c.sendfile(f)
c.shutdown(socket.SHUT_WR)
r = {"start": start, "sent": sent, "sent_at": time.monotonic(), "back": 0, "eof_back": None}
c.settimeout(float(sys.argv[3]))
try:
    while True:
        b = c.recv(65536)
        if not b:
            r["eof_back"] = time.monotonic()
            break
        r["back"] += len(b)
except OSError as e:
    r["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(r), flush=True)
'''

def closed_events(path):
    """pincat's JSON events of one forwarding end: (closed events, other
    problems: error, refused and warning events)."""
    closed, problems = [], []
    try:
        with open(path) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    problems.append(line.strip())
                    continue
                if e.get("event") == "closed":
                    closed.append(e)
                elif e.get("event") in ("error", "refused", "warning"):
                    problems.append(json.dumps(e))
    except OSError:
        pass
    return closed, problems


def forward_problems(tool, r, errs, size):
    """What went wrong in one forward run besides the bytes: each end's
    `closed` event (pincat), the ends' last error lines (others), and the
    close carried back to the client."""
    problems = []
    if tool.events:
        for side, err in zip(("exposing", "using"), errs):
            closed, other = closed_events(err)
            want_field = "received" if side == "exposing" else "sent"
            if len(closed) != 1:
                problems.append(f"{side} end: {len(closed)} closed events")
            for e in closed:
                if e.get("outcome") != "ok" or e.get(want_field) != size:
                    problems.append(f"{side} end closed: outcome {e.get('outcome')}, "
                                    f"{want_field} {e.get(want_field)}")
            problems += [f"{side} end: {o}" for o in other]
    elif r.get("error") or r.get("got") != size:
        problems += [t for t in (tail(errs[0]), tail(errs[1])) if t]
    if r.get("seconds") is not None and not r.get("eof_back"):
        problems.append("the client got no close back" + (f" ({r['client_error']})"
                                                          if r.get("client_error") else ""))
    return problems


def write_files(tool, ctx):
    """Writes the tool's per-run files (stunnel configs); ctx with their paths."""
    for key, text in tool.files:
        path = os.path.join(SHM, f"{key}.conf")
        with open(path, "w") as f:
            f.write(text.format(**ctx))
        ctx = dict(ctx, **{key: path})
    return ctx


def start_chain(tool, ctx, dst, errs):
    """The sink, the exposing end and the using end, all listening; then the
    client. Returns {name: process}."""
    procs = {"sink": subprocess.Popen(py(SINK_PY, ctx["sink"], dst), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, bufsize=0, start_new_session=True)}
    wait_listening(ctx["sink"])
    for name, argv, err in (("expose", tool.receiver, errs[0]), ("use", tool.sender, errs[1])):
        with open(err, "wb") as e:
            procs[name] = subprocess.Popen(fill(argv, ctx), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=e,
                                           start_new_session=True)
    wait_listening(ctx["port"])
    wait_listening(ctx["local"])
    procs["client"] = subprocess.Popen(py(CLIENT_PY, ctx["local"], ctx["src"], 60),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       bufsize=0, start_new_session=True)
    return procs


def collect(procs, rus):
    """The sink's and the client's reports (each prints one line, at its
    end), both reaped into rus; the run's figures from them."""
    s = json_line(read_line(procs["sink"].stdout, TIMEOUT) or b"")
    if not s:
        raise RuntimeError(f"the sink got no end of input within {TIMEOUT} s")
    rus["sink"] = reap(procs["sink"], 10)
    c = json_line(read_line(procs["client"].stdout, 90) or b"")
    if not c:
        raise RuntimeError("the client printed no result")
    rus["client"] = reap(procs["client"], 10)
    return dict(got=s["bytes"], seconds=s["eof"] - c["start"], sent=c["sent"],
                eof_back=c["eof_back"] is not None, client_error=c.get("error"))


def settle(tool, procs, errs):
    """Lets the ends finish the connection (pincat's print a `closed` event
    each; socat's forked children must be gone, else their CPU is lost),
    then returns each end's peak RSS."""
    ends = (procs["expose"].pid, procs["use"].pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if tool.events:
            if all(closed_events(e)[0] for e in errs):
                break
        elif not descendants(ends):
            break
        time.sleep(0.02)
    return [vm_hwm(p) for p in ends] if tool.rss else [None, None]


def stop_chain(procs, rus):
    """Kills the client and the sink if still there, SIGTERMs the ends; all
    rusages into rus."""
    for name in ("client", "sink"):
        if name in procs and name not in rus:
            rus[name] = stop(procs[name], group=True)
    for name in ("use", "expose"):
        if name in procs:
            rus[name] = terminate(procs[name])
    for p in procs.values():
        if p.stdout:
            p.stdout.close()


def run_forward(tool, ctx, size, want):
    """One stream of `size` bytes: sink, exposing end and using end started
    and listening, then the client; waits until the sink has its end of input
    and the client its close back, lets the ends finish the connection, then
    stops them (SIGTERM). Returns figures and checks."""
    ctx = write_files(tool, dict(ctx, **dict(zip(("port", "local", "sink"), free_ports(3)))))
    dst = os.path.join(SHM, "forwarded.bin")
    remove(dst)
    warm_free_memory(size)
    errs = [os.path.join(SHM, f"forward-{side}.err") for side in ("expose", "use")]
    r, procs, rus = {"seconds": None}, {}, {}
    try:
        procs = start_chain(tool, ctx, dst, errs)
        r.update(collect(procs, rus))
        r["rss"] = settle(tool, procs, errs)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        r["error"] = str(e)
    finally:
        stop_chain(procs, rus)
    r["cpu_ends"] = cpu_of(rus.get("expose"), rus.get("use"))
    r["cpu_all"] = cpu_of(*rus.values())
    r["problems"] = forward_problems(tool, r, errs, size)
    r["intact"] = (r.get("got") == size and os.path.isfile(dst)
                   and sha256_file(dst) == want)
    remove(dst)
    return r


def forward_failure(r):
    if r.get("error") or not r["intact"] or r["problems"]:
        return f"{r.get('error') or ''} intact={r['intact']} {'; '.join(r['problems'])}"
    return None


def forward(ctx):
    """Runs case 6; returns its Markdown lines and target outcomes."""
    size = FWD_MB << 20
    src = os.path.join(SHM, "forward.bin")
    want = write_payload(src, size)
    tools, skipped = case_tools("forward")
    try:
        runs = repeated("forward", tools, lambda t: run_forward(t, dict(ctx, src=src), size, want),
                        forward_failure)
    finally:
        remove(src)
    return forward_report(tools, skipped, runs, size)


EXPLAINED = (
    "The client (Python: connect, `sendfile` of the file, half-close, then wait for "
    "the close to come back) and the sink (Python: accept one connection, write what "
    "arrives to tmpfs) are the same for every tool. MB/s is the payload over the time "
    "from the client's start (before its connect) to the sink's end of input, both "
    "read from CLOCK_MONOTONIC inside those processes. CPU is user+sys from wait4: of "
    "the two tunnel ends (started fresh for each run, stopped with SIGTERM after the "
    "connection ended, so start-up and shut-down are included; socat's forked "
    "children are reaped by their parent first), and of all four processes. Peak RSS "
    "is each end's VmHWM just before it is stopped (n/a for socat, whose connection "
    "lives in a forked child). Intact: the sink's bytes match the source's sha256; "
    "pincat's rows also check each end's `closed` event (outcome ok, the right byte "
    "count) and every row checks that the client got the close back. The pairs: "
    "`pincat forward --listen 127.0.0.1:P --to SINK --allow CLIENT_FP --identity ID` "
    "+ `pincat forward --local 127.0.0.1:L --to 127.0.0.1:P --pin FP --identity "
    "CLIENT_ID`; `socat -b 131072 OPENSSL-LISTEN:P,cert,key,verify=0,fork TCP:SINK` + "
    "`socat -b 131072 TCP-LISTEN:L,fork OPENSSL:127.0.0.1:P,verify=0`; stunnel4 "
    "server and client (`client = yes`) configs in the foreground. Between its own "
    "ends pincat uses TLS_AES_128_GCM_SHA256; socat and stunnel4 negotiate OpenSSL's "
    "default TLS 1.3 suite, TLS_AES_256_GCM_SHA384.")


def forward_row(tool, rs, size):
    """({metric: median}, peak RSS of each end, intact text, note) of one tool."""
    gib = size / (1 << 30)
    good, used = usable(rs, lambda r: r.get("seconds") and r["intact"])
    values = {"MB/s": size / 1e6 / med([r["seconds"] for r in used]) if used else None,
              "CPU s/GiB": med([r["cpu_ends"] / gib for r in used]),
              "all": med([r["cpu_all"] / gib for r in used])}
    rss = [max([r["rss"][i] or 0 for r in used if r.get("rss")] or [0]) or None for i in (0, 1)]
    each = ", ".join(f"{size / 1e6 / r['seconds']:.0f} MB/s {r['cpu_ends'] / gib:.2f}"
                     + ("" if r["intact"] else " (bad)") if r.get("seconds") else "failed"
                     for r in rs)
    note = [tool.note + (";" if tool.note else ""), f"runs (MB/s, tunnel CPU-s/GiB): {each}."]
    if len(good) < len(rs):
        note.append(f"**lost, corrupted or failed in {len(rs) - len(good)} of {len(rs)} "
                    "runs**" + (" (figures over all runs)" if not good and used else ""))
    odd = sorted({p for r in rs for p in r.get("problems", [])}
                 | {r["error"] for r in rs if r.get("error")})
    if odd:
        note.append("**" + "; ".join(odd)[:600] + "**")
    return values, rss, f"{len(good)}/{len(rs)}", " ".join(n for n in note if n)


def forward_report(tools, skipped, runs, size):
    values, rows = {}, []
    for tool in tools:
        values[tool.name], rss, intact, note = forward_row(tool, runs[tool.name], size)
        rows.append((tool, rss, intact, note))
    ref = values.get(REFERENCE, {})
    lines = ["## Forward", "",
             f"A {FWD_MB} MiB random stream on tmpfs through a forwarding pair on loopback: "
             "client -> using end (plaintext listener) -> TLS -> exposing end -> sink, "
             f"{REPS} {plural(REPS, 'repetition')} per tool, order rotated each repetition, "
             "one discarded warm-up.", "",
             "| tool | MB/s | CPU s/GiB, both tunnel ends | CPU s/GiB, all four processes | "
             "peak RSS MiB exposing / using | intact | pincat advantage MB/s | "
             "pincat advantage CPU | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for tool, rss, intact, note in rows:
        v = values[tool.name]
        adv = [advantage(m, ref.get(m), v.get(m)) for m in ("MB/s", "CPU s/GiB")]
        rss_text = " / ".join(fmt(x, 1) for x in rss) if tool.rss else "n/a"
        lines.append(f"| {md(tool.name)} | {fmt(v['MB/s'], 0)} | {fmt(v['CPU s/GiB'], 2)} | "
                     f"{fmt(v['all'], 2)} | {rss_text} | {intact} | {fmt(adv[0], 2, 'x')} | "
                     f"{fmt(adv[1], 2, 'x')} | {md(note)} |")
    lines += skipped_rows(skipped, 9)
    return lines + ["", EXPLAINED, ""], skipped_outcomes("forward", "forward", skipped)
