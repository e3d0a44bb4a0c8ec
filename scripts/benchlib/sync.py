"""Case 9, sync and resume: `send --update` of a tree the receiver already
has (unchanged, and with one large file edited) against rsync over ssh, on
a real disk over loopback; and a send resumed after a cut at half way
against a full send of the same file."""

import contextlib
import hashlib
import itertools
import os
import shutil
import subprocess
import time

from .common import (REFERENCE, REPS, RESUME_MB, SHM, SMALL_FILES, SYNC_BIG_MB, TIMEOUT, fill,
                     fmt, judge, log, md, med, plural, repeated, rotated, skipped_rows, usable)
from .procs import (cpu_of, free_port, json_line, py, reap, sha256_file, stop, tail, terminate,
                    wait_listening, write_payload)
from .small_files import disk_dir, make_tree, tree_listing, warm_tree
from .sshd import ssh_keys, sshd_on_path, sshd_ready
from .tools import case_tools, skipped_outcomes

EDIT_BYTES = 4096
EDIT_EPOCH = 1_750_000_000  # the edited file's first modification time (s)
# Relays one connection from 127.0.0.1:argv[1] to 127.0.0.1:argv[2], both
# ways, counting bytes; with argv[3] > 0 it forwards only that many bytes
# from the client and then shuts both sockets down (the cut). Prints the
# counts as JSON and exits.
CUT_PROXY_PY = r'''
import json, socket, sys, threading
LISTEN, UPSTREAM, CUT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
srv = socket.create_server(("127.0.0.1", LISTEN))
client, _ = srv.accept()
srv.close()
upstream = socket.create_connection(("127.0.0.1", UPSTREAM))
counts = {"up": 0, "down": 0}
cut = threading.Event()

def pump(src, dst, key, limit):
    try:
        while not cut.is_set():
            data = src.recv(1 << 18)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return
            if limit and counts[key] + len(data) >= limit:
                data = data[:limit - counts[key]]
                cut.set()
            dst.sendall(data)
            counts[key] += len(data)
    except OSError:
        pass
    finally:
        if cut.is_set():
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

threads = [threading.Thread(target=pump, args=(client, upstream, "up", CUT)),
           threading.Thread(target=pump, args=(upstream, client, "down", 0))]
for t in threads:
    t.start()
for t in threads:
    t.join()
client.close()
upstream.close()
print(json.dumps(dict(counts, cut=cut.is_set())), flush=True)
'''


# --- the peers' set-up -------------------------------------------------------------

def start_receivers(tools, ctxs, stack):
    """Starts every tool's receiver (kept for the whole case, stopped when
    `stack` closes) and waits until each listens."""
    for tool in tools:
        c = ctxs[tool.name]
        err = stack.enter_context(open(os.path.join(SHM, f"sync-recv-{c['port']}.err"), "wb"))
        p = subprocess.Popen(fill(tool.receiver, c), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        stack.callback(terminate, p)
        try:
            wait_listening(c["port"])
        except RuntimeError as e:
            raise RuntimeError(f"{tool.name}: {e}: {tail(err.name)}") from None


# --- one sync run ------------------------------------------------------------------

def done_event(path):
    """The sender's transfer-done event (pincat's JSON on stderr), or None."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if '"transfer-done"' in line:
            return json_line(line)
    return None


def run_sender(argv, err_path):
    """Times one sender from its start to its exit. Returns seconds (None on
    a timeout), CPU of it and its children (rsync's ssh) and its exit code."""
    r = {"seconds": None}
    with open(err_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, start_new_session=True)
        try:
            ru = reap(p, TIMEOUT)
            r["seconds"] = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            r["error"] = f"timed out after {TIMEOUT} s"
            ru = stop(p, group=True)
    r.update(cpu=cpu_of(ru), rc=p.returncode)
    return r


def run_sync(tool, ctx, before):
    """One timed sync into the tool's running receiver: before() (the case's
    edit), the source and destination read into the page cache, dirty data
    synced, then the sender timed; what arrived checked by sha256 listing."""
    before()
    warm_tree(ctx["src"])
    warm_tree(ctx["dst"])
    os.sync()
    err = os.path.join(SHM, "sync-send.err")
    r = run_sender(fill(tool.sender, ctx), err)
    result = tool.result.format(**ctx)
    r["intact"] = (r["rc"] == 0 and os.path.isdir(result)
                   and tree_listing(result) == tree_listing(ctx["src"]))
    done = done_event(err)
    r["payload"] = done.get("bytes") if done else None
    if not r["intact"]:
        r["stderr"] = tail(err)
    return r


def start_proxy(upstream, cut=0):
    """The counting (and with cut, cutting) proxy in front of upstream;
    (process, its port), once it listens."""
    port = free_port()
    p = subprocess.Popen(py(CUT_PROXY_PY, port, upstream, cut), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_listening(port)
    except RuntimeError:
        stop(p)
        raise
    return p, port


def proxy_counts(p):
    """The proxy's byte counts once it has exited ({"up", "down", "cut"}), or None."""
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stop(p)
        return None
    return json_line(out)


def counted_run(tool, ctx, before):
    """One more (untimed for the table) run through the counting proxy: the
    bytes that crossed the wire each way, TLS or ssh framing included."""
    p, port = start_proxy(ctx["port"])
    try:
        r = run_sync(tool, dict(ctx, port=port), before)
    finally:
        counts = proxy_counts(p)
    r["wire"] = counts
    return r


def sync_failure(r):
    if r.get("intact"):
        return None
    return (r.get("error") or (f"exit code {r['rc']}" if r.get("rc") else "the tree differs")) + (
        f" ({r['stderr']})" if r.get("stderr") else "")


# --- the two sync scenarios ----------------------------------------------------------

def edit(path, n):
    """Overwrites EDIT_BYTES in the middle of path in place, with content
    that differs for every n: the file always differs from every earlier
    state in that one region and in its modification time, set to a whole
    second of its own (rsync's quick check compares whole seconds: two
    edits within one second would look unchanged to it)."""
    data = hashlib.sha256(str(n).encode()).digest() * (EDIT_BYTES // 32)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(data)
    os.utime(path, (EDIT_EPOCH + n, EDIT_EPOCH + n))


def scenario(label, tools, ctxs, before):
    """Every tool brought up to date once (untimed), then the repeated timed
    runs (one discarded warm-up each) and one counted run per tool.
    Returns ({name: [runs]}, {name: counted run})."""
    for tool in tools:
        log(f"{label}: bringing {tool.name}'s copy up to date (untimed)")
        r = run_sync(tool, ctxs[tool.name], lambda: None)
        if not r["intact"]:
            raise RuntimeError(f"{tool.name}: the first copy failed: {sync_failure(r)}")
    runs = repeated(label, tools, lambda t: run_sync(t, ctxs[t.name], before), sync_failure,
                    warm_all=True)
    counted = {}
    for tool in tools:
        log(f"{label}: counted run through the proxy: {tool.name}")
        counted[tool.name] = counted_run(tool, ctxs[tool.name], before)
    return runs, counted


def sync_case(ctx, base, fs):
    """Both sync scenarios on one tree under base; their Markdown lines and outcomes."""
    sshd_on_path()
    tools, skipped = case_tools("sync")
    src = os.path.join(base, "src", "tree")
    log(f"sync: writing {SMALL_FILES} files to a {fs} directory")
    total = make_tree(src)
    results = []
    with contextlib.ExitStack() as stack:
        ctxs = {}
        for n, tool in enumerate(tools):
            dst = os.path.join(base, f"dst-{n}")
            os.mkdir(dst)
            c = dict(ctx, src=src, dst=dst, port=free_port())
            if tool.files:
                c = sshd_ready(tool, ssh_keys(c), "sync")
            ctxs[tool.name] = c
        start_receivers(tools, ctxs, stack)
        results.append(("no change", scenario("sync, no change", tools, ctxs, lambda: None)))
        big = os.path.join(src, "big.bin")
        write_payload(big, SYNC_BIG_MB << 20)
        counter = itertools.count()
        results.append(("one file changed", scenario(
            "sync, one file changed", tools, ctxs, lambda: edit(big, next(counter)))))
    return sync_report(tools, skipped, results, total, fs)



# --- resume ------------------------------------------------------------------------

def wait_kept(err_path, limit=60):
    """Waits until the one-shot receiver said it kept the cut transfer for
    a resume (its warning event), so the resumed sender does not find it
    still busy with the broken connection."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with open(err_path, "rb") as f:
            events = [json_line(line) for line in f.read().decode(errors="replace").splitlines()]
        if any(e and e.get("event") == "warning" and "resume" in e.get("message", "")
               for e in events):
            return True
        time.sleep(0.01)
    return False


def full_send(tool, ctx, want):
    """A timed send into a fresh empty directory: from starting the sender
    (the one-shot receiver listening) until both have exited."""
    with receiver(tool, ctx) as (rp, _):
        warm_tree(os.path.dirname(ctx["src"]))
        os.sync()
        r = run_sender(fill(tool.sender, ctx), os.path.join(SHM, "resume-send.err"))
        finish(r, rp, tool, ctx, want)
    return r


def resumed_send(tool, ctx, want, size):
    """A send cut by the proxy after half the file, then the same command
    again (dialling the receiver directly), timed like full_send."""
    with receiver(tool, ctx) as (rp, err):
        p, port = start_proxy(ctx["port"], size // 2)
        try:
            first = run_sender(fill(tool.sender, dict(ctx, port=port)),
                               os.path.join(SHM, "resume-cut.err"))
        finally:
            counts = proxy_counts(p)
        if not wait_kept(err):
            return {"seconds": None, "error": f"the receiver kept nothing: {tail(err)}"}
        warm_tree(os.path.dirname(ctx["src"]))
        os.sync()
        r = run_sender(fill(tool.sender, ctx), os.path.join(SHM, "resume-send.err"))
        finish(r, rp, tool, ctx, want)
    r.update(cut=counts, cut_rc=first["rc"], cut_seconds=first["seconds"])
    if first["rc"] == 0 or not (counts or {}).get("cut"):
        r["intact"], r["error"] = False, "the first attempt was not cut"
    return r


@contextlib.contextmanager
def receiver(tool, ctx):
    """A one-shot receiver into ctx's fresh {dst}, listening; stopped (if
    still running) and {dst} removed afterwards. Yields it and its stderr path."""
    os.mkdir(ctx["dst"])
    err = os.path.join(SHM, "resume-recv.err")
    with open(err, "wb") as e:
        rp = subprocess.Popen(fill(tool.receiver, ctx), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=e, start_new_session=True)
    try:
        wait_listening(ctx["port"])
        yield rp, err
    finally:
        stop(rp, group=True)
        shutil.rmtree(ctx["dst"], ignore_errors=True)


def finish(r, rp, tool, ctx, want):
    """Waits for the receiver's exit (part of the time), then checks the file."""
    if r["seconds"] is not None:
        t0 = time.perf_counter()
        try:
            reap(rp, 60)
            r["seconds"] += time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            r["seconds"], r["error"] = None, "the receiver did not exit"
    result = tool.result.format(**ctx)
    r["intact"] = (r["rc"] == 0 and rp.returncode == 0 and os.path.isfile(result)
                   and sha256_file(result) == want
                   and not os.path.exists(os.path.join(ctx["dst"], ".pincat-state")))
    done = done_event(os.path.join(SHM, "resume-send.err"))
    r["payload"] = done.get("bytes") if done else None
    r["resumed"] = done.get("resumed_bytes") if done else None
    if not r["intact"]:
        r["stderr"] = tail(os.path.join(SHM, "resume-send.err"))


def resume_case(ctx, base):
    """A RESUME_MB file: full sends against cut-then-resumed ones, alternated."""
    tool = case_tools("resume")[0][0]
    size = RESUME_MB << 20
    src = os.path.join(base, "resume-src", "big.bin")
    os.makedirs(os.path.dirname(src))
    want = write_payload(src, size)
    dsts = (os.path.join(base, f"recv-{n}") for n in itertools.count())

    def fresh():
        return dict(ctx, src=src, dst=next(dsts), port=free_port())
    kinds = {"full": lambda: full_send(tool, fresh(), want),
             "resumed": lambda: resumed_send(tool, fresh(), want, size)}
    log("resume: warm-up (discarded): full")
    kinds["full"]()
    runs = {k: [] for k in kinds}
    for rep in range(REPS):
        for kind in rotated(list(kinds), rep):
            log(f"resume: rep {rep + 1}/{REPS}: {kind}")
            r = kinds[kind]()
            if not r.get("intact"):
                log(f"  FAILED: {r.get('error') or 'not intact'} ({r.get('stderr', '')})")
            runs[kind].append(r)
    return resume_report(runs, size)


def sync(ctx):
    """Runs case 9; returns its Markdown lines and target outcomes."""
    title = ["## Sync and resume", ""]
    base, fs, why = disk_dir("pincat-bench-sync-")
    if base is None:
        log(f"sync: skipped: {why}")
        return title + [f"Skipped: {why}.", ""], []
    try:
        lines, outcomes = sync_case(ctx, base, fs)
        lines += resume_case(ctx, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return title + lines, outcomes


# --- the report ----------------------------------------------------------------------

def wire(r):
    """'up / down' bytes of a counted run, or '-'."""
    w = (r or {}).get("wire")
    return f"{w['up']:,} / {w['down']:,}" if w else "-"


def sync_rows(label, tools, runs, counted):
    """The table rows and outcomes of one scenario."""
    values, notes = {}, {}
    for tool in tools:
        good, used = usable(runs[tool.name], lambda r: r.get("intact") and r.get("seconds"))
        values[tool.name] = {"wall s": med([r["seconds"] for r in used]),
                             "CPU s": med([r["cpu"] for r in used])}
        each = ", ".join(f"{r['seconds']:.3f}" + ("" if r.get("intact") else " (bad)")
                         if r.get("seconds") else "failed" for r in runs[tool.name])
        notes[tool.name] = (f"{len(good)}/{len(runs[tool.name])}", f"runs (s): {each}")
    p = values.get(REFERENCE, {}).get("wall s")
    lines, outcomes = [], []
    for tool in tools:
        v = values[tool.name]
        goal, met, out = judge(tool, values, f"sync, {label}")
        outcomes += out
        adv = v["wall s"] / p if p and v["wall s"] else None
        payload = counted[tool.name].get("payload")
        lines.append(f"| {label} | {md(tool.name)} | {fmt(v['wall s'], 3)} | {fmt(v['CPU s'], 3)} "
                     f"| {notes[tool.name][0]} | {fmt(adv, 2, 'x')} | {wire(counted[tool.name])} "
                     f"| {f'{payload:,}' if payload is not None else '-'} | {goal} | {met} "
                     f"| {notes[tool.name][1]} |")
    return lines, outcomes, values



def sync_report(tools, skipped, results, total, fs):
    intro = SYNC_INTRO.format(files=SMALL_FILES, mb=total / 1e6, fs=fs, big=SYNC_BIG_MB,
                              edit=EDIT_BYTES, reps=f"{REPS} {plural(REPS, 'repetition')}")
    lines = ["### `send --update` against rsync over ssh", "", intro, "",
             "| case | tool | wall s | sender CPU s | intact | rsync / pincat (time) | "
             "bytes on the wire up / down (counted run) | pincat payload bytes | target | met "
             "| runs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    outcomes, ratios = [], []
    for label, (runs, counted) in results:
        rows, out, values = sync_rows(label, tools, runs, counted)
        lines += rows
        outcomes += out
        p = values.get(REFERENCE, {}).get("wall s")
        for name, v in values.items():
            if name != REFERENCE and p and v["wall s"]:
                ratios.append(f"- {label}: {md(name)} takes {v['wall s'] / p:.2f}x pincat's time "
                              f"({v['wall s']:.3f} s against {p:.3f} s).")
    lines += skipped_rows(skipped, 11)
    outcomes += skipped_outcomes("sync", "sync", skipped)
    return lines + [""] + ratios + ["", SYNC_EXPLAINED, ""], outcomes


SYNC_INTRO = (
    "The small-files tree ({files} files, {mb:.1f} MB, the same seed) on a {fs} disk, already "
    "present at each tool's own destination on that disk (brought up to date once, untimed), "
    "moved again over loopback with nothing changed; then the same tree plus one {big} MiB "
    "random file, {edit} bytes of which (in its middle) are overwritten in place before "
    "every run with content no earlier run had, so every run finds that one region and the "
    "file's modification time changed. {reps} per tool, order rotated each repetition, one "
    "discarded warm-up per tool.")

SYNC_EXPLAINED = (
    "pincat: `pincat send 127.0.0.1:P --pin FP --code CODE --json --update SRC/tree` into "
    "`pincat serve --keep-open --allow-update --out DST --code CODE` (started once per case); "
    "rsync: `rsync -a -e 'ssh -F /dev/null -p P -i KEY ...' SRC/tree 127.0.0.1:DST/` into a "
    "throwaway `sshd -D` on loopback (ed25519 keys made per run of the case, started once, "
    "default ciphers; the host key checked). Wall time runs from starting the sender to its "
    "exit: pincat's sender exits on the receipt, sent once the replaced file is synced to "
    "disk; rsync does not sync (its remote side has renamed the new file into place when it "
    "exits). Before every run the source and the destination tree are read into the page "
    "cache and dirty data synced. Sender CPU is user+sys of the sender and its children "
    "(rsync's ssh); the receivers' is not counted. Every run's destination is compared with "
    "the source by sha256 listing. Bytes on the wire come from one extra run per tool "
    "through a counting TCP proxy (Python, in sync.py), not timed in the table: client to "
    "server / back, TLS or ssh framing and handshakes included; pincat's payload bytes are "
    "its `transfer-done` event's `bytes` of that run.")


def resume_report(runs, size):
    """The resume table: full against resumed sends."""
    rows, med_s = [], {}
    for kind in ("full", "resumed"):
        rs = runs[kind]
        good, used = usable(rs, lambda r: r.get("intact") and r.get("seconds"))
        med_s[kind] = med([r["seconds"] for r in used])
        payload = med([r.get("payload") for r in used])
        resumed = med([r.get("resumed") for r in used])
        each = ", ".join(f"{r['seconds']:.2f}" + ("" if r.get("intact") else " (bad)")
                         if r.get("seconds") else "failed" for r in rs)
        cut = med([(r.get("cut") or {}).get("up") for r in used]) if kind == "resumed" else None
        rows.append(f"| {kind} | {fmt(med_s[kind], 2)} | "
                    f"{size / 1e6 / med_s[kind] if med_s[kind] else 0:.0f} | "
                    f"{f'{payload:,.0f}' if payload is not None else '-'} | "
                    f"{f'{resumed:,.0f}' if resumed is not None else '-'} | "
                    f"{f'{cut:,.0f}' if cut is not None else '-'} | {len(good)}/{len(rs)} | "
                    f"runs (s): {each} |")
    ratio = (f"The resumed send takes {med_s['resumed'] / med_s['full']:.2f}x the time of the "
             f"full one ({med_s['full'] / med_s['resumed']:.2f}x faster)."
             if med_s["full"] and med_s["resumed"] else "No ratio: a kind had no timed run.")
    return ["### Resume after a cut at half way", "",
            RESUME_INTRO.format(mb=RESUME_MB, reps=f"{REPS} {plural(REPS, 'repetition')}"), "",
            "| send | wall s | MB/s of the file | payload bytes (transfer-done) | "
            "resumed bytes | bytes through the proxy before the cut | intact | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---|"] + rows + ["", ratio, "",
                                                               RESUME_EXPLAINED, ""]


RESUME_INTRO = (
    "One {mb} MiB random file on the disk, sent over loopback to a one-shot `pincat serve "
    "--json --out DST --code CODE` in a fresh empty directory: full, or resumed (the same "
    "`pincat send --json SRC` first through a proxy that forwards the first half of the "
    "file's size from the sender and then shuts both connections down; the receiver keeps "
    "what arrived and goes on listening; the same command then dials the receiver directly "
    "and is timed). {reps}, the two kinds alternated, one discarded full warm-up.")

RESUME_EXPLAINED = (
    "Wall time runs from starting the (second) sender until it and the receiver have exited "
    "(the file synced and in place). The source is read into the page cache and dirty data "
    "(the kept half) synced before it. Payload bytes are the sender's `transfer-done` `bytes`, "
    "resumed bytes its `resumed_bytes` (kept by the receiver, not sent again). A run is "
    "intact when both exit 0, the file's sha256 matches and no kept state is left; a "
    "resumed run also needs its first attempt cut (the sender failing).")
