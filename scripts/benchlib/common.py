"""Settings (BENCH_* variables), the Tool and Target types, target judging,
Markdown helpers, the build and the context every template is filled with."""

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
REPS = int(os.environ.get("BENCH_REPS", "5"))
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "BENCHMARKS.md"))
SMALL_FILES = int(os.environ.get("BENCH_SMALL_FILES", "5000"))
SMALL_SETTLE = int(os.environ.get("BENCH_SMALL_SETTLE", "61"))  # seconds
FWD_MB = int(os.environ.get("BENCH_FWD_MB", "256"))
PIPE_MB = int(os.environ.get("BENCH_PIPE_MB", "256"))
RTT_RUNS = int(os.environ.get("BENCH_RTT_RUNS", "5"))
RTT_DELAY = int(os.environ.get("BENCH_RTT_DELAY_MS", "50")) / 1000  # seconds, each direction
SYNC_BIG_MB = int(os.environ.get("BENCH_SYNC_BIG_MB", "64"))
RESUME_MB = int(os.environ.get("BENCH_RESUME_MB", "1024"))
# An earlier pincat binary for the throughput case, and what to call it.
BASELINE = os.environ.get("BENCH_BASELINE")
BASELINE_NAME = os.environ.get("BENCH_BASELINE_NAME", "baseline")
SHM = tempfile.mkdtemp(prefix="pincat-bench-",
                       dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
# Cargo puts its output where CARGO_TARGET_DIR says (relative to the
# repository, where the build runs), else in target/.
TARGET_DIR = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
PINCAT = os.path.join(TARGET_DIR, "release", "pincat")
LOADGEN = os.path.join(TARGET_DIR, "release", "examples", "loadgen")
# A listener with a fixed code keeps its failed attempts here (none expected).
os.environ["PINCAT_STATE_DIR"] = os.path.join(SHM, "state")
TIMEOUT = 300
REFERENCE = "pincat"  # the row every other row of its case is compared with

# How each measure is read: +1 more is better, -1 less is better.
METRICS = {"MB/s": +1, "CPU s/GiB": -1, "peak RSS MiB": -1, "ms": -1, "wall s": -1,
           "round trips": -1}


# --- the table's types -----------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A goal on one measure. With `factor`: against the tool on its row,
    pincat must be `factor` times better (its MB/s over the tool's, or the
    tool's CPU-seconds or time over pincat's); with `of_reference` as well,
    the row itself must reach `factor` times the reference row (pincat's)
    figure instead. With `bound`: the row's own figure must stay within it."""
    metric: str
    factor: float = None
    bound: float = None
    label: str = None               # shown instead of the generated text
    of_reference: bool = False

    def text(self):
        if self.label:
            return self.label
        more = METRICS[self.metric] > 0
        if self.bound is not None:
            return f"{self.metric} {'>=' if more else '<='} {self.bound:g}"
        whose = f"{REFERENCE}'s" if self.of_reference else "the tool's"
        if more:
            return f"{self.metric} >= {self.factor:g}x {whose}"
        return f"{self.metric} <= {whose}" + (f" / {self.factor:g}" if self.factor != 1 else "")

    def subject(self, case_label, tool_name):
        """What the target is about, as the summary names it."""
        if self.factor is None:
            return f"{case_label}: {self.metric}, {tool_name}"
        pair = f"{tool_name} vs {REFERENCE}" if self.of_reference else f"pincat vs {tool_name}"
        return f"{case_label}: {self.metric}, {pair}"


@dataclass(frozen=True)
class Tool:
    """One tool of one case. Templates are argv tuples whose items are
    formatted (str.format, so a literal brace is doubled) with the case's
    context: {pincat} {port} {pin} {code} {ident} (pincat identity) {cert}
    {key} (openssl P-256 pair) {src} {dst} {out} {size} {msg}; forward adds
    {local} (the using end's plaintext port), {sink} (the sink's port),
    {client_ident} and {client_pin} (the using end's identity) and one key
    per entry of `files`; round trips adds {proxy} (the delay proxy's port)."""
    case: str
    name: str
    receiver: tuple = None          # listens first; None when the case has no receiver
    sender: tuple = ()              # the timed command (start-up: the command started)
    needs: tuple = ()               # binaries besides pincat
    targets: tuple = ()
    result: str = "{dst}"           # what arrives, compared with the source
    sender_stdin: str = None        # file fed to the sender's stdin
    receiver_stdout: str = None     # file the receiver's stdout goes to
    receiver_stdin_open: bool = False  # s_server quits on stdin EOF
    self_report: str = None         # "iperf3": the rate is iperf3's own JSON report
    ready: str = None               # start-up: the output line that means ready
    baseline: bool = False          # measures the harness, not a peer: no comparison
    files: tuple = ()               # (key, text template): written per run, path as {key}
    events: bool = False            # forward: both ends print pincat's JSON events on stderr
    # Small files: the receiver serves until stopped (sshd): the clock stops
    # when the sender exits (its remote side has finished by then), then the
    # receiver is stopped (SIGTERM) and its CPU counted.
    server: bool = False
    rss: bool = True                # forward: the end processes' own peak RSS means something
    # Throughput: commands started between receiver and sender and stopped
    # (SIGTERM) once both have exited, their CPU counted and their peak RSS
    # shown instead of the receiver's and sender's (a forwarding pair).
    relays: tuple = ()
    ports: tuple = ("port",)        # throughput: context keys given a free port, all waited for
    note: str = ""

    def missing(self):
        """'X, Y missing: skipped' when a needed binary is absent, else None."""
        gone = [b for b in self.needs if shutil.which(b) is None]
        return f"{', '.join(gone)} missing: skipped" if gone else None


def fill(template, ctx):
    return [a.format(**ctx) for a in template]


def rotated(items, rep):
    """The order for one repetition: no tool always runs first or after the same peer."""
    k = rep % len(items) if items else 0
    return items[k:] + items[:k]


def repeated(label, tools, run, failure, warm_all=False):
    """One discarded warm-up run of the reference tool (of every tool with
    warm_all), then REPS repetitions of every tool in rotated order.
    run(tool) returns a run's result; failure(result) says what went wrong,
    or None. Returns {name: [results]}."""
    for tool in tools if warm_all else [t for t in tools if t.name == REFERENCE]:
        log(f"{label}: warm-up (discarded): {tool.name}")
        run(tool)
    runs = {t.name: [] for t in tools}
    for rep in range(REPS):
        for tool in rotated(tools, rep):
            log(f"{label}: rep {rep + 1}/{REPS}: {tool.name}")
            r = run(tool)
            why = failure(r)
            if why:
                log(f"  FAILED: {why}")
            runs[tool.name].append(r)
    return runs


# --- small helpers ---------------------------------------------------------------

def log(*a):
    print(*a, file=sys.stderr, flush=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def usable(runs, ok):
    """(the runs that passed `ok`, the runs the figures use: those, or every
    timed run when none passed)."""
    good = [r for r in runs if ok(r)]
    return good, good or [r for r in runs if r.get("seconds")]


def plural(n, word):
    return word if n == 1 else word + "s"


def md(name):
    return name.replace("|", "\\|")


def num(x):
    """A figure with as many digits as it deserves."""
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def fmt(x, digits, suffix=""):
    return f"{x:.{digits}f}{suffix}" if x is not None else "-"


def skipped_rows(skipped, columns):
    return [f"| {md(name)} | " + " | ".join(["-"] * (columns - 2)) + f" | {why} |"
            for name, why in skipped.items()]


# --- targets -----------------------------------------------------------------------

def advantage(metric, pincat, tool):
    """How many times better pincat is than the tool on metric (>1: pincat is)."""
    if not pincat or not tool:
        return None
    return pincat / tool if METRICS[metric] > 0 else tool / pincat


def check(target, mine, ref):
    """(figure, whether met, shown text) of one target, from this row's and
    the reference row's {metric: figure}."""
    m = target.metric
    if target.factor is None:
        got = mine.get(m)
        ok = got is not None and (got >= target.bound if METRICS[m] > 0 else got <= target.bound)
        return got, ok, num(got) if got is not None else "-"
    a, b = (mine.get(m), ref.get(m)) if target.of_reference else (ref.get(m), mine.get(m))
    got = advantage(m, a, b)
    shown = f"{num(a)} vs {num(b)} ({got:.2f}x)" if got is not None else "-"
    return got, got is not None and got >= target.factor, shown


def judge(tool, values, case_label):
    """Checks the targets of one row. values: {tool name: {metric: figure}}.
    Returns (target text, met text, outcome rows for the summary)."""
    texts, mets, rows = [], [], []
    for t in tool.targets:
        got, ok, shown = check(t, values.get(tool.name, {}), values.get(REFERENCE, {}))
        met = "met" if ok else ("**missed**" if got is not None else "not measured")
        texts.append(t.text())
        mets.append(met)
        rows.append((t.subject(case_label, tool.name), shown, t.text(), met))
    return "; ".join(texts) or "-", "; ".join(mets) or "-", rows


# --- setup -------------------------------------------------------------------------

def build(loadgen=True):
    log(f"building pincat (release) into {TARGET_DIR}")
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    if loadgen:
        log("building the loadgen example (release)")
        subprocess.run(["cargo", "build", "--release", "--locked", "--example", "loadgen"],
                       cwd=ROOT, check=True)


def context():
    """The values command templates are formatted with: two pincat
    identities and their pins, a code, and an openssl P-256 certificate for
    the TLS peers (when openssl is there; every tool that uses it needs it)."""
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out",
                        "cert.pem", "-days", "2", "-subj", "/CN=bench"], cwd=SHM, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pins = []
    for name in ("id.pem", "client.pem"):
        subprocess.run([PINCAT, "identity", "new", name], cwd=SHM, check=True,
                       stdout=subprocess.DEVNULL)
        pins.append(subprocess.run([PINCAT, "fingerprint", name], cwd=SHM, check=True,
                                   stdout=subprocess.PIPE, text=True).stdout.strip())
    return {"pincat": PINCAT, "baseline": BASELINE or PINCAT, "code": secrets.token_hex(10),
            "pin": pins[0], "ident": os.path.join(SHM, "id.pem"),
            "client_pin": pins[1], "client_ident": os.path.join(SHM, "client.pem"),
            "cert": os.path.join(SHM, "cert.pem"), "key": os.path.join(SHM, "key.pem")}
