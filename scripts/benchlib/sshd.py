"""A throwaway sshd on loopback for the rsync-over-ssh rows (cases 5 and 9):
sshd found in sbin, keys and known_hosts, its config, its privilege
separation directory."""

import os
import re
import shutil
import subprocess

from .common import SHM, log
from .forward import write_files
from .procs import remove


def sshd_on_path():
    """sshd lives in an sbin directory, which a user's PATH often lacks."""
    if shutil.which("sshd") is None:
        os.environ["PATH"] += os.pathsep + os.pathsep.join(("/usr/sbin", "/usr/local/sbin"))


def ssh_keys(ctx):
    """Host and client keys (ssh-keygen), authorized_keys and known_hosts
    (the host key under the alias the ssh command checks) in SHM; ctx with
    their paths and sshd's."""
    d = os.path.join(SHM, "ssh")
    os.makedirs(d, mode=0o700, exist_ok=True)
    for name in ("host", "client"):
        remove(os.path.join(d, name))
        remove(os.path.join(d, name + ".pub"))
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pincat-bench",
                        "-f", os.path.join(d, name)], check=True, stdout=subprocess.DEVNULL)
    shutil.copy(os.path.join(d, "client.pub"), os.path.join(d, "authorized_keys"))
    with open(os.path.join(d, "host.pub")) as f:
        kind, key = f.read().split()[:2]
    with open(os.path.join(d, "known_hosts"), "w") as f:
        f.write(f"pincat-bench {kind} {key}\n")
    return dict(ctx, sshd=shutil.which("sshd"), host_key=os.path.join(d, "host"),
                ssh_key=os.path.join(d, "client"),
                authorized_keys=os.path.join(d, "authorized_keys"),
                known_hosts=os.path.join(d, "known_hosts"))


def privsep_dir(ctx, label):
    """sshd started by root refuses to run without its privilege separation
    directory, which the system's ssh service makes at boot (absent where no
    sshd ever ran, as in a container): `sshd -t` names it; made here (0755)."""
    out = subprocess.run([ctx["sshd"], "-t", "-f", ctx["sshd_config"]], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True).stdout
    m = re.search(r"Missing privilege separation directory: (\S+)", out)
    if m and os.geteuid() == 0:
        log(f"{label}: making sshd's privilege separation directory {m.group(1)}")
        os.makedirs(m.group(1), mode=0o755, exist_ok=True)


def sshd_ready(tool, ctx, label):
    """ctx (with the keys of ssh_keys and its {port}) with the tool's sshd
    config written for that port, and sshd able to start from it."""
    ctx = write_files(tool, ctx)
    privsep_dir(ctx, label)
    return ctx
