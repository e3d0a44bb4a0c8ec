"""Child processes and files: ports and listening checks, reaping with
resource usage, peak RSS, stopping, the payload files and their digests."""

import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

from .common import SHM, log


# --- ports ---------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_ports(n):
    """n distinct free ports."""
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def listening(port):
    """True when something listens on 127.0.0.1:port, checked without
    connecting (a probe would use up single-accept peers)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == want and parts[3] == "0A":
                return True
    return False


def wait_listening(port, limit=30):
    deadline = time.monotonic() + limit
    while not listening(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listened on {port}")
        time.sleep(0.002)


# --- waiting for and stopping children -------------------------------------------------

def reap(p, timeout):
    """Waits for the child p (like Popen.wait) through wait4, so its resource
    usage is kept: CPU and peak RSS of the process and of the children it
    waited for. Returns that rusage; raises TimeoutExpired."""
    if hasattr(os, "pidfd_open"):
        fd = os.pidfd_open(p.pid)
        try:
            if not select.select([fd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(p.args, timeout)
        finally:
            os.close(fd)
        _, status, ru = os.wait4(p.pid, 0)
    else:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(p.args, timeout)
            time.sleep(0.002)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru


def try_reap(p):
    """wait4 without blocking: the child's rusage if it has exited, else None."""
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if not pid:
        return None
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru


def stop(p, group=False):
    """Kills a child this script started if it still runs (its process group
    when started with start_new_session) and reaps it; returns its rusage,
    or None if it was reaped already."""
    if p is None or p.returncode is not None:
        return None
    try:
        os.killpg(p.pid, signal.SIGKILL) if group else p.kill()
    except ProcessLookupError:
        pass
    return reap(p, 30)


def terminate(p, timeout=10):
    """SIGTERM to a child (a server that does not exit by itself), then its
    rusage once it is gone; SIGKILL to its group if it lingers."""
    if p.returncode is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return reap(p, timeout)
        except subprocess.TimeoutExpired:
            pass
    return stop(p, group=True)


def cpu_of(*rus):
    return sum(r.ru_utime + r.ru_stime for r in rus if r is not None)


def descendants(pids):
    """The processes descended from pids (read from /proc/*/stat)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), set(pids)
    while todo:
        todo = {c for c, pp in parent.items() if pp in todo and c not in found}
        found |= todo
    return found


# --- peak RSS ----------------------------------------------------------------------------

def vm_hwm(pid):
    """A live process's own peak RSS in MiB (VmHWM: counted from its exec, so
    unlike wait4's ru_maxrss it does not start at this script's size), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gnu_time():
    """GNU time's path, or None: it records a command's peak RSS. (wait4's
    ru_maxrss cannot: a child of this script starts as a copy of it, so its
    peak is at least the Python interpreter's.)"""
    path = shutil.which("time")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True).stdout
    return path if "GNU" in out else None


def with_rss(argv, time_path, name):
    """argv under GNU time writing the peak RSS (KiB) to a file, and that file."""
    if time_path is None:
        return argv, None
    path = os.path.join(SHM, f"{name}.rss")
    return [time_path, "-o", path, "-f", "%M", *argv], path


def read_rss(path):
    """MiB from a GNU time file (its last line), or None."""
    try:
        with open(path) as f:
            return int(f.read().split()[-1]) / 1024
    except (OSError, ValueError, IndexError, TypeError):
        return None


# --- children's output -------------------------------------------------------------------

def read_line(stream, timeout):
    """One line from a child's unbuffered pipe (bufsize=0: nothing is read
    ahead, so select sees every line) within timeout seconds, or None."""
    if select.select([stream], [], [], timeout)[0]:
        return stream.readline()
    return None


def json_line(text):
    """The last JSON object printed on a line of text, or None."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def tail(path, n=3):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(lines[-n:])


def py(code, *args):
    """argv running a Python program given as text."""
    return [sys.executable, "-c", code, *map(str, args)]


# --- files -------------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_payload(path, size):
    log(f"writing {size >> 20} MiB of random data to {path}")
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    return sha256_file(path)


def write_message(name="msg"):
    """The 100-byte message of the latency and round-trip cases; its path."""
    path = os.path.join(SHM, name)
    with open(path, "wb") as f:
        f.write(b"m" * 100)
    return path


def warm_free_memory(size):
    """Writes then deletes a tmpfs file of 1.1 x `size` bytes, so the pages
    the next run's receiver writes into are ones this guest has touched.

    This machine is a VM whose balloon driver reports free memory back to
    the host (virtio free page reporting); the first write to a reported
    page is a host page fault inside the guest's copy. Without this step a
    1 GiB write into fresh tmpfs pages took 0.28 s or 1.1-1.2 s at random
    (`dd` alone), so every tool's 1 GiB runs were bimodal (the receiver's
    system time 0.43 against 1.44 s, the whole difference in its copy into
    the page cache); with it, 0.27-0.34 s in 5 of 6. Every tool gets the
    same step, outside the timed part of its run."""
    path = os.path.join(SHM, "ballast.bin")
    zeros = bytes(1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range((size + size // 10) >> 20):
                f.write(zeros)
    except OSError as e:
        log(f"warming free memory failed (timings may be noisier): {e}")
    finally:
        remove(path)
