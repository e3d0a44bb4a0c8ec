"""Case 5, many small files: a fixed-seed tree on a real disk moved over
loopback into a fresh empty directory there, timed until it is durable."""

import itertools
import os
import random
import shutil
import subprocess
import tempfile
import time

from .common import (REFERENCE, REPS, ROOT, SHM, SMALL_FILES, SMALL_SETTLE, TIMEOUT, advantage,
                     fill, fmt, judge, log, md, med, plural, repeated, skipped_rows, usable)
from .procs import (cpu_of, descendants, free_port, reap, sha256_file, stop, tail, terminate,
                    wait_listening)
from .sshd import ssh_keys, sshd_on_path, sshd_ready
from .tools import case_tools, skipped_outcomes

SMALL_SEED = 20261122
SMALL_MIN, SMALL_MAX = 200, 8192
SMALL_DIRS = ["", "docs", "src", "src/core", "src/core/util", "assets", "assets/img",
              "data/2026/q4"]


def fs_type(path):
    return subprocess.run(["stat", "-f", "-c", "%T", path], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()


def disk_dir(prefix="pincat-bench-small-"):
    """(fresh directory on a real disk, its file system type, None) or
    (None, type, why not)."""
    base = os.environ.get("BENCH_DISK_DIR") or os.path.join(ROOT, "target")
    os.makedirs(base, exist_ok=True)
    fs = fs_type(base).replace("ext2/ext3", "ext2/3/4")  # stat's name covers ext4
    if fs in ("tmpfs", "ramfs"):
        return None, fs, (f"BENCH_DISK_DIR ({base}) is on {fs}, not a disk; "
                          "point BENCH_DISK_DIR at a directory on a real disk")
    return tempfile.mkdtemp(prefix=prefix, dir=base), fs, None


def make_tree(root):
    """The same tree every run: SMALL_FILES files of SMALL_MIN..SMALL_MAX random
    bytes spread over SMALL_DIRS (each gets at least one file). Returns bytes."""
    rng = random.Random(SMALL_SEED)
    total = 0
    for d in SMALL_DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(SMALL_FILES):
        d = SMALL_DIRS[i] if i < len(SMALL_DIRS) else rng.choice(SMALL_DIRS)
        data = rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX))
        with open(os.path.join(root, d, f"f{i:05d}.bin"), "wb") as f:
            f.write(data)
        total += len(data)
    os.sync()
    return total


def tree_listing(root):
    """Sorted (relative path, sha256 | 'dir' | 'other') of everything under root."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames:
            out.append((os.path.normpath(os.path.join(rel, name)), "dir"))
        for name in filenames:
            path = os.path.join(dirpath, name)
            kind = sha256_file(path) if os.path.isfile(path) and not os.path.islink(path) \
                else "other"
            out.append((os.path.normpath(os.path.join(rel, name)), kind))
    return sorted(out)


def listing_diff(want, got):
    if got is None:
        return "nothing received"
    w, g = dict(want), dict(got)
    missing = sum(1 for k in w if k not in g)
    extra = sum(1 for k in g if k not in w)
    differ = sum(1 for k in w if k in g and g[k] != w[k])
    return f"{missing} missing, {extra} extra, {differ} different"


def warm_tree(root):
    """Reads every file under root, so each run starts with the source in
    the page cache: this machine's host takes cached pages back within
    seconds, and a run that found the tree evicted measured the disk's cold
    reads (0.1 s became 0.5 s for every tool) instead of the transfer."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def run_small(tool, ctx, want):
    """One timed transfer into the fresh empty directory {dst}. The clock runs
    from starting the sender (receiver already listening) until both sides
    have exited, i.e. pincat's receipt (durable) or `tar x` + `sync` done
    (rsync: its sender and the `sync` after it; sshd is stopped afterwards)."""
    ctx = dict(ctx, port=free_port())
    if tool.files:
        ctx = sshd_ready(tool, ctx, "small files")
    os.mkdir(ctx["dst"])
    warm_tree(ctx["src"])
    os.sync()  # start every run with no dirty data of earlier runs to flush
    err = os.path.join(SHM, "small.err")
    with open(err, "wb") as e:
        r = time_small(fill(tool.receiver, ctx), fill(tool.sender, ctx), ctx["port"], e,
                       tool.server)
    result = tool.result.format(**ctx)
    got = tree_listing(result) if os.path.isdir(result) else None
    r["intact"] = got == want and not any(r["rcs"])
    if got != want:
        r["diff"] = listing_diff(want, got)
    if any(r["rcs"]):
        r["diff"] = (r.get("diff", "") + f" exit codes sender {r['rcs'][1]}, "
                     f"receiver {r['rcs'][0]}").strip()
    if not r["intact"] and tail(err):
        r["stderr"] = tail(err)
    return r


def time_small(recv, send, port, err, server=False):
    """Starts the receiver, then times the sender until both have exited
    (with server, a receiver that serves until stopped: until the sender
    has exited; then the receiver's session processes are waited for and it
    is stopped, exit code 0 if it was still running).
    Returns seconds, CPU of both sides (wait4 counts every process of a
    pipeline: sh waits for them all; sshd the sessions it reaped) and exit
    codes [receiver, sender]."""
    # Own sessions: a failed pipeline is killed as a whole.
    rp = subprocess.Popen(recv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=err, start_new_session=True)
    sp, rus, r = None, [None, None], {"seconds": None}
    try:
        wait_listening(port)
        t0 = time.perf_counter()
        sp = subprocess.Popen(send, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, start_new_session=True)
        rus[1] = reap(sp, TIMEOUT)
        if not server:
            rus[0] = reap(rp, 60)
        r["seconds"] = time.perf_counter() - t0
        if server:
            rus[0] = stop_server(rp)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        r["error"] = str(e)
    finally:
        rus = [ru or stop(p, group=True) for ru, p in zip(rus, (rp, sp))]
    r.update(cpu=cpu_of(*rus), rcs=[rp.returncode, sp and sp.returncode])
    return r


def stop_server(p, limit=30):
    """Waits (untimed) until a server's per-connection processes are gone,
    so their CPU is among what it reaped, then stops it with SIGTERM.
    Returns its rusage; its exit code is 0 if it was still running."""
    deadline = time.monotonic() + limit
    while descendants([p.pid]) and time.monotonic() < deadline:
        time.sleep(0.01)
    if p.poll() is not None:
        raise RuntimeError(f"the receiver exited by itself (exit code {p.returncode})")
    ru = terminate(p)
    p.returncode = 0
    return ru


def small_failure(r):
    if r["intact"]:
        return None
    return (r.get("error") or r.get("diff")) + (f" ({r['stderr']})" if r.get("stderr") else "")


def small_files(ctx):
    """Runs case 5; returns its Markdown lines and target outcomes."""
    title = ["## Many small files", ""]
    base, fs, why = disk_dir()
    if base is None:
        log(f"small files: skipped: {why}")
        return title + [f"Skipped: {why}.", ""], []
    sshd_on_path()
    tools, skipped = case_tools("small files")
    if any(t.files for t in tools):
        ctx = ssh_keys(ctx)
    try:
        src = os.path.join(base, "tree")
        log(f"small files: writing {SMALL_FILES} files to a {fs} directory")
        total = make_tree(src)
        want = tree_listing(src)
        # Every run gets its own new directory, all removed only when the
        # case ends, and the runs start SMALL_SETTLE seconds after the last
        # deletion on the disk this script can see: on ext4 without a
        # journal (this machine's disk) every create walks past the inodes
        # freed in the last 60 s one by one, so deleting one run's 5,000
        # files (or a previous bench's, or a build's) made later creates
        # quadratic, whichever tool ran then (0.06 s for `tar x` of the tree
        # became 0.2 to 0.9 s, pincat's receiver 0.15 s became 1.3 s).
        if SMALL_SETTLE > 0:
            log(f"small files: waiting {SMALL_SETTLE} s for recent deletions to age "
                "(BENCH_SMALL_SETTLE)")
            time.sleep(SMALL_SETTLE)
        dsts = (os.path.join(base, f"recv-{n}") for n in itertools.count())
        runs = repeated("small files", tools,
                        lambda t: run_small(t, dict(ctx, src=src, dst=next(dsts)), want),
                        small_failure, warm_all=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    intro = INTRO.format(files=SMALL_FILES, mb=total / 1e6, min=SMALL_MIN,
                         max_kib=SMALL_MAX // 1024, seed=SMALL_SEED, dirs=len(SMALL_DIRS), fs=fs,
                         reps=f"{REPS} {plural(REPS, 'repetition')}")
    return small_report(tools, skipped, runs, intro)


INTRO = ("{files} files, {mb:.1f} MB in total ({min} B to {max_kib} KiB of random bytes each, "
         "seed {seed}, {dirs} directories), read from and received into a fresh empty directory "
         "on the same {fs} disk over loopback, {reps} per tool, order rotated each repetition, "
         "one discarded warm-up per tool; the source tree is read into the page cache before "
         "every run (the host reclaims cached pages within seconds, so without it runs would "
         "time the disk's cold reads).")

EXPLAINED = (
    "Wall time runs from starting the sender (the receiver already listens on a "
    "new empty directory of its own) until both sides have exited with the data durable: "
    "pincat's sender exits on the receipt, which the receiver sends only once "
    "what arrived is synced to disk (no extra sync is added); the tar receivers run "
    "`socat OPENSSL-LISTEN ... | tar x -C DIR && sync` and "
    "`ncat --ssl --recv-only -l ... | tar x -C DIR && sync`, fed by "
    "`tar c -C SRC . | socat -u STDIN OPENSSL:...` and "
    "`tar c -C SRC . | ncat --ssl --send-only ...`; rsync runs "
    "`rsync -a -e 'ssh -F /dev/null -p P -i KEY ...' SRC/tree 127.0.0.1:DST/ && sync` "
    "against a throwaway `sshd -D` on loopback (ed25519 keys made once per case, the host "
    "key checked, default ciphers; started per run before the clock and stopped after it): "
    "rsync itself does not sync, so its time includes the `sync` after it (on the same "
    "machine, which flushes what its remote side wrote). `sync` flushes the whole "
    "machine, so other activity on the disk lands on the peers that sync. CPU is the "
    "user+sys time of every process of both sides (rsync: the sender, its ssh and `sync`; "
    "sshd and the remote rsync it reaped, counted once it is stopped; writeback done by "
    "kernel threads is not counted). Every run's tree is compared with the source by "
    "sha256 listing; a run that differs or exits non-zero is failed and its time "
    "is left out of the median. Advantage is the tool's wall time over pincat's. "
    "Received trees are removed only after the last run, and the runs start "
    "{settle} s after the tree is written: on ext4 without a journal, every "
    "create walks past the inodes freed in the last 60 s, so a run right after "
    "deleting thousands of files pays a quadratic cost that has nothing to do with "
    "the tool.")


def small_row(tool, rs):
    """({metric: median}, intact text, note, whether no run was intact) of one tool."""
    good, used = usable(rs, lambda r: r.get("intact") and r.get("seconds"))
    values = {"wall s": med([r["seconds"] for r in used]), "CPU s": med([r["cpu"] for r in used])}
    note = ""
    if len(good) < len(rs):
        note = (f"**failed (lost, corrupted or error) in {len(rs) - len(good)} of "
                f"{len(rs)} runs**")
        if not good and used:
            note += " (median over failed runs)"
    each = ", ".join(f"{r['seconds']:.2f}" + ("" if r.get("intact") else " (bad)")
                     if r.get("seconds") else "failed" for r in rs)
    intact = f"{len(good)}/{len(rs)}"
    return values, intact, f"runs (s): {each}. {note}".strip(), not good and bool(used)


def comparisons(tools, values, no_intact):
    """One line per peer: how pincat's wall time compares with it."""
    p = values.get(REFERENCE, {}).get("wall s")
    lines = []
    for name, v in values.items():
        w = v["wall s"]
        if name == REFERENCE or not p or not w:
            continue
        caveat = (f" ({md(name)} delivered an incomplete tree in every run)"
                  if name in no_intact else "")
        if w >= p:
            lines.append(f"- pincat is {w / p:.2f}x faster than {md(name)}{caveat}.")
        else:
            lines.append(f"- pincat takes {p / w:.2f}x the time of {md(name)}{caveat}.")
    goals = [t.name for t in tools if t.targets and values.get(t.name, {}).get("wall s")]
    if p and len(goals) > 1:
        best = min(goals, key=lambda n: values[n]["wall s"])
        w = values[best]["wall s"]
        lines.append(f"- Against the faster of the peers with a target ("
                     f"{', '.join(md(n) for n in goals)}), {md(best)}: {w:.2f} s against pincat's "
                     f"{p:.2f} s, {w / p:.2f}x (above 1: pincat is faster).")
    return lines


def small_report(tools, skipped, runs, intro):
    values, rows, no_intact = {}, [], set()
    for tool in tools:
        values[tool.name], intact, note, none_intact = small_row(tool, runs[tool.name])
        if none_intact:
            no_intact.add(tool.name)
        rows.append((tool, intact, note))
    p = values.get(REFERENCE, {}).get("wall s")
    lines = ["## Many small files", "", intro, "",
             "| tool | wall s | CPU s (user+sys, both sides) | intact (sha256 listing) | "
             "pincat advantage (speed) | target | met | note |",
             "|---|---:|---:|---:|---:|---|---|---|"]
    outcomes = []
    for tool, intact, note in rows:
        v = values[tool.name]
        goal, met, out = judge(tool, values, "small files")
        outcomes += out
        adv = advantage("wall s", p, v["wall s"])
        lines.append(f"| {md(tool.name)} | {fmt(v['wall s'], 2)} | {fmt(v['CPU s'], 2)} | "
                     f"{intact} | {fmt(adv, 2, 'x')} | {goal} | {met} | {note} |")
    lines += skipped_rows(skipped, 8)
    outcomes += skipped_outcomes("small files", "small files", skipped)
    lines += [""] + comparisons(tools, values, no_intact)
    return lines + ["", EXPLAINED.format(settle=SMALL_SETTLE), ""], outcomes
