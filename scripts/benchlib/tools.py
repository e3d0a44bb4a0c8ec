"""The table: every tool of every case as one Tool row (commands, needed
binaries, targets). The cases iterate over it; a tool whose binaries are
missing is reported as skipped."""

from .common import BASELINE, BASELINE_NAME, Target, Tool, log

PC = "{pincat}"
AT = "127.0.0.1:{port}"
# pincat's rows run in the default mode: the listener admits only the
# dialer that proves its code (a fixed one per run, {code}).
SERVE = (PC, "serve", "--quiet", "--identity", "{ident}", "--listen", AT, "--code", "{code}")
SEND = (PC, "send", AT, "--pin", "{pin}", "--quiet", "--code", "{code}")
# The same without the code: the listener serves anyone (what the code costs).
SERVE_ANY = (PC, "serve", "--quiet", "--identity", "{ident}", "--listen", AT, "--allow-any")
SEND_ANY = (PC, "send", AT, "--pin", "{pin}", "--quiet")
PIPE_LISTEN = (PC, "pipe", "--quiet", "--identity", "{ident}", "--listen", AT, "--code", "{code}")
PIPE_DIAL = (PC, "pipe", AT, "--pin", "{pin}", "--quiet", "--code", "{code}")
# Forward: the exposing end listens on {port} and relays to the sink on
# {sink}; the using end listens in plaintext on {local} and carries to
# {port}. Mutual: the server is pinned, the client allowed by fingerprint.
FWD_EXPOSE = (PC, "forward", "--json", "--identity", "{ident}", "--listen", AT, "--to",
              "127.0.0.1:{sink}", "--allow", "{client_pin}")
FWD_USE = (PC, "forward", "--json", "--local", "127.0.0.1:{local}", "--to", AT, "--pin",
           "{pin}", "--identity", "{client_ident}")
SOCAT_TLS_LISTEN = "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={cert},key={key},verify=0"
NCAT_TLS_LISTEN = ("ncat", "--ssl", "--ssl-cert", "{cert}", "--ssl-key", "{key}", "--recv-only",
                   "-l")
SOCAT_U = ("socat", "-u", "-b", "131072")

# The small-files peers are shell pipelines; their arguments come positionally.
TAR_SOCAT_RECV = ('socat -u -b 131072 "OPENSSL-LISTEN:$1,bind=127.0.0.1,reuseaddr,cert=$2,key=$3,'
                  'verify=0" STDOUT | tar x -C "$4" && sync')
TAR_SOCAT_SEND = 'tar c -C "$1" . | socat -u -b 131072 STDIN "OPENSSL:127.0.0.1:$2,verify=0"'
TAR_NCAT_RECV = ('ncat --ssl --ssl-cert "$2" --ssl-key "$3" --recv-only -l 127.0.0.1 "$1" '
                 '| tar x -C "$4" && sync')
TAR_NCAT_SEND = 'tar c -C "$1" . | ncat --ssl --send-only 127.0.0.1 "$2"'
TAR_RECV_ARGS = ("{port}", "{cert}", "{key}", "{dst}")

# Sync: pincat's events (the wire payload of transfer-done) on stderr.
SEND_JSON = (PC, "send", AT, "--pin", "{pin}", "--json", "--code", "{code}")
# A throwaway sshd for rsync: keys and known_hosts made by the case (sshd.py),
# the host key checked under an alias so it holds on any port (a counting proxy's).
SSHD_CONFIG = ("Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
               "AuthorizedKeysFile {authorized_keys}\nPidFile none\nUsePAM no\n"
               "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
               "PermitRootLogin prohibit-password\nLogLevel ERROR\n")
SSH = ("ssh -F /dev/null -p {port} -i {ssh_key} -o IdentitiesOnly=yes -o IdentityAgent=none "
       "-o HostKeyAlias=pincat-bench -o UserKnownHostsFile={known_hosts} "
       "-o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR")

# Small files: rsync over ssh, then `sync` (the same machine: it flushes what
# the remote side wrote, as the tar receivers' `sync` does).
RSYNC_SYNC = 'rsync -a -e "$1" "$2" "$3" && sync'

STUNNEL_COMMON = "foreground = yes\npid =\ndebug = 3\n"
STUNNEL_SERVER = (STUNNEL_COMMON + "[fwd]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{sink}\n"
                  "cert = {cert}\nkey = {key}\n")
STUNNEL_CLIENT = (STUNNEL_COMMON + "[fwd]\nclient = yes\naccept = 127.0.0.1:{local}\n"
                  "connect = 127.0.0.1:{port}\n")

THROUGHPUT_TOOLS = [
    # {src} on tmpfs to {dst} (or into {out}) on tmpfs; one row per data path of pincat.
    Tool("throughput", "pincat",
         receiver=SERVE + ("--out", "{out}"),
         sender=SEND + ("{src}",),
         result="{out}/payload.bin", targets=(Target("peak RSS MiB", bound=16),),
         note="files mode: `serve --out DIR`, `send SRC`"),
    Tool("throughput", "pincat stdout",
         receiver=SERVE, sender=SEND,
         sender_stdin="{src}", receiver_stdout="{dst}",
         targets=(Target("MB/s", 0.95, of_reference=True),),
         note="a stream: `serve > FILE`, `send < SRC`"),
    Tool("throughput", "pincat stdin pipe",
         receiver=SERVE + ("--out", "{dst}"),
         sender=("sh", "-c", 'cat "$0" | "$@"', "{src}") + SEND,
         note="a stream from a pipe: `cat SRC | send` into `serve --out FILE`; CPU includes "
              "cat's and sh's"),
    Tool("throughput", "pincat --raw",
         receiver=SERVE + ("--raw", "--out", "{dst}"),
         sender=SEND + ("--raw", "{src}")),
    Tool("throughput", "pincat pipe",
         receiver=PIPE_LISTEN, sender=PIPE_DIAL,
         sender_stdin="{src}", receiver_stdout="{dst}",
         note="one direction: `pipe --listen > FILE` (stdin empty) <- `pipe < SRC`"),
    Tool("throughput", "pincat forward",
         receiver=SOCAT_U + ("TCP-LISTEN:{sink},bind=127.0.0.1,reuseaddr", "CREATE:{dst}"),
         relays=(FWD_EXPOSE, FWD_USE),
         sender=SOCAT_U + ("FILE:{src}", "TCP:127.0.0.1:{local}"),
         ports=("sink", "port", "local"), needs=("socat",),
         note="plain socat TCP's sender and receiver joined by `forward --local` -> `forward "
              "--listen --allow` (mutual); CPU: all four processes; peak RSS: exposing / "
              "using end"),
    Tool("throughput", "socat OPENSSL",
         receiver=SOCAT_U + (SOCAT_TLS_LISTEN, "CREATE:{dst}"),
         sender=SOCAT_U + ("FILE:{src}", "OPENSSL:127.0.0.1:{port},verify=0"),
         needs=("socat", "openssl"), targets=(Target("MB/s", 2.2),)),
    Tool("throughput", "ncat --ssl",
         receiver=NCAT_TLS_LISTEN + ("127.0.0.1", "{port}"),
         sender=("ncat", "--ssl", "--send-only", "127.0.0.1", "{port}"),
         needs=("ncat", "openssl"), sender_stdin="{src}", receiver_stdout="{dst}",
         targets=(Target("MB/s", 2.5),)),
    Tool("throughput", "openssl s_client->s_server",
         receiver=("openssl", "s_server", "-quiet", "-naccept", "1", "-cert", "{cert}", "-key",
                   "{key}", "-accept", AT),
         sender=("openssl", "s_client", "-nocommands", "-connect", AT),
         needs=("openssl",), sender_stdin="{src}", receiver_stdout="{dst}",
         receiver_stdin_open=True),
    Tool("throughput", "plain socat TCP",
         receiver=SOCAT_U + ("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "CREATE:{dst}"),
         sender=SOCAT_U + ("FILE:{src}", "TCP:127.0.0.1:{port}"),
         needs=("socat",), targets=(Target("MB/s", 1.0), Target("CPU s/GiB", 1.0)),
         note="no encryption"),
    Tool("throughput", "iperf3 -F",
         receiver=("iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "{port}"),
         sender=("iperf3", "-c", "127.0.0.1", "-p", "{port}", "-F", "{src}", "-n", "{size}",
                 "-J"),
         needs=("iperf3",), result=None, self_report="iperf3",
         note="no encryption; rate reported by iperf3, nothing written"),
]

STARTUP_TOOLS = [
    # The sender is started under the wait-for-line wrapper and killed once
    # it printed `ready`.
    Tool("startup", "pincat",
         sender=(PC, "serve", "--listen", "127.0.0.1:0", "--json"),
         ready='{"event":"listening"', targets=(Target("ms", bound=5),),
         note="ephemeral P-256 identity; until the listening event (carries the fingerprint)"),
    Tool("startup", "ncat --ssl",
         sender=("ncat", "-v", "--ssl", "-l", "127.0.0.1", "{port}"),
         ready="Ncat: Listening on", needs=("ncat",),
         note="temporary 2048-bit RSA key; until \"Listening on\""),
    Tool("startup", "wrapper alone",
         sender=("echo", "ready"),
         ready="ready", needs=("echo",), baseline=True,
         note="sh, fork and exec of echo: the wrapper's share of the rows above"),
]

LATENCY_TOOLS = [
    # 100 bytes from {msg} on stdin, against a keep-open receiver.
    Tool("latency", "pincat",
         receiver=SERVE + ("--keep-open",), sender=SEND,
         sender_stdin="{msg}", targets=(Target("ms", bound=5),),
         note="exits on the receipt; proves the listener's code first (the default)"),
    Tool("latency", "pincat --allow-any",
         receiver=SERVE_ANY + ("--keep-open",), sender=SEND_ANY,
         sender_stdin="{msg}", note="no code: the listener serves anyone"),
    Tool("latency", "ncat --ssl",
         receiver=NCAT_TLS_LISTEN + ("--keep-open", "127.0.0.1", "{port}"),
         sender=("ncat", "--ssl", "--send-only", "127.0.0.1", "{port}"),
         sender_stdin="{msg}", needs=("ncat", "openssl"), note="no receipt"),
]

SMALL_FILES_TOOLS = [
    # The tree {src} into the fresh empty directory {dst}.
    Tool("small files", "pincat",
         receiver=SERVE + ("--out", "{dst}"), sender=SEND + ("{src}",),
         result="{dst}/tree"),
    Tool("small files", "tar | socat OPENSSL",
         receiver=("sh", "-c", TAR_SOCAT_RECV, "sh") + TAR_RECV_ARGS,
         sender=("sh", "-c", TAR_SOCAT_SEND, "sh", "{src}", "{port}"),
         needs=("socat", "tar", "openssl"), targets=(Target("wall s", 1.5),)),
    Tool("small files", "tar | ncat --ssl",
         receiver=("sh", "-c", TAR_NCAT_RECV, "sh") + TAR_RECV_ARGS,
         sender=("sh", "-c", TAR_NCAT_SEND, "sh", "{src}", "{port}"),
         needs=("ncat", "tar", "openssl")),
    Tool("small files", "rsync -a over ssh",
         receiver=("{sshd}", "-D", "-e", "-f", "{sshd_config}"),
         sender=("sh", "-c", RSYNC_SYNC, "sh", SSH, "{src}", "127.0.0.1:{dst}/"),
         files=(("sshd_config", SSHD_CONFIG),), needs=("rsync", "ssh", "sshd", "ssh-keygen"),
         result="{dst}/tree", server=True, targets=(Target("wall s", 1.5),),
         note="a throwaway sshd on loopback (started per run, untimed); `&& sync` after rsync"),
]

FORWARD_TOOLS = [
    # The receiver is the exposing end, the sender the using end; the client
    # and the sink are the harness's own (Python).
    Tool("forward", "pincat",
         receiver=FWD_EXPOSE, sender=FWD_USE,
         events=True, note="mutual: server pinned, client allowed by fingerprint"),
    Tool("forward", "socat OPENSSL fork",
         receiver=("socat", "-b", "131072", SOCAT_TLS_LISTEN + ",fork", "TCP:127.0.0.1:{sink}"),
         sender=("socat", "-b", "131072", "TCP-LISTEN:{local},bind=127.0.0.1,reuseaddr,fork",
                 "OPENSSL:127.0.0.1:{port},verify=0"),
         needs=("socat", "openssl"), rss=False,
         note="verify=0: neither side authenticated; a forked child per connection"),
    Tool("forward", "stunnel4",
         receiver=("stunnel4", "{server_conf}"), sender=("stunnel4", "{client_conf}"),
         files=(("server_conf", STUNNEL_SERVER), ("client_conf", STUNNEL_CLIENT)),
         needs=("stunnel4", "openssl"), note="the client does not verify the server"),
]

PIPE_TOOLS = [
    # {src} into the listener's stdin, {src2} into the dialer's; their
    # stdouts go to files (set by the harness).
    Tool("pipe", "pincat", receiver=PIPE_LISTEN, sender=PIPE_DIAL),
    Tool("pipe", "socat OPENSSL",
         receiver=("socat", "-b", "131072", "-t", "30", SOCAT_TLS_LISTEN, "STDIO"),
         sender=("socat", "-b", "131072", "-t", "30", "STDIO", "OPENSSL:127.0.0.1:{port},verify=0"),
         needs=("socat", "openssl"),
         note="verify=0; -t 30 so the later direction is not cut 0.5 s after the first ends"),
]

ROUND_TRIPS_TOOLS = [
    # The sender dials the delay proxy ({proxy}), which relays to the
    # keep-open receiver on {port}; the receiver's stdout is {dst}.
    Tool("round trips", "pincat",
         receiver=SERVE + ("--keep-open",),
         sender=(PC, "send", "127.0.0.1:{proxy}", "--pin", "{pin}", "--quiet", "--code",
                 "{code}"),
         sender_stdin="{msg}", receiver_stdout="{dst}",
         targets=(Target("round trips", bound=3.25,
                         label="round trips <= 3: one more than without a code (median below "
                               "3.25)"),),
         note="confirmed: exits on the receipt; proves the code first (the default)"),
    Tool("round trips", "pincat --allow-any",
         receiver=SERVE_ANY + ("--keep-open",),
         sender=(PC, "send", "127.0.0.1:{proxy}", "--pin", "{pin}", "--quiet"),
         sender_stdin="{msg}", receiver_stdout="{dst}",
         targets=(Target("round trips", bound=2.25,
                         label="round trips <= 2 (median below 2.25)"),),
         note="confirmed; no code: the listener serves anyone"),
    Tool("round trips", "ncat --ssl",
         receiver=NCAT_TLS_LISTEN + ("--keep-open", "127.0.0.1", "{port}"),
         sender=("ncat", "--ssl", "--send-only", "127.0.0.1", "{proxy}"),
         sender_stdin="{msg}", receiver_stdout="{dst}", needs=("ncat", "openssl"),
         note="unconfirmed: no receipt"),
    Tool("round trips", "openssl s_client",
         receiver=("openssl", "s_server", "-quiet", "-cert", "{cert}", "-key", "{key}", "-accept",
                   AT),
         sender=("openssl", "s_client", "-nocommands", "-connect", "127.0.0.1:{proxy}"),
         sender_stdin="{msg}", receiver_stdout="{dst}", receiver_stdin_open=True,
         needs=("openssl",), note="unconfirmed: exits at the end of its input"),
]


SYNC_TOOLS = [
    # The tree {src} into {dst}, which already holds it: the receiver is
    # started once per case and kept running, the sender timed.
    Tool("sync", "pincat",
         receiver=SERVE + ("--keep-open", "--allow-update", "--out", "{dst}"),
         sender=SEND_JSON + ("--update", "{src}"), result="{dst}/tree",
         note="`send --update` into `serve --keep-open --allow-update`; exits on the receipt"),
    Tool("sync", "rsync -a over ssh",
         receiver=("{sshd}", "-D", "-e", "-f", "{sshd_config}"),
         sender=("rsync", "-a", "-e", SSH, "{src}", "127.0.0.1:{dst}/"),
         files=(("sshd_config", SSHD_CONFIG),), needs=("rsync", "ssh", "sshd", "ssh-keygen"),
         result="{dst}/tree", targets=(Target("wall s", 2.0),),
         note="a throwaway sshd on loopback; no fsync"),
]

RESUME_TOOLS = [
    # One file {src} into {dst}: a one-shot receiver (JSON events, to see
    # the cut transfer kept), the sender dialling {port} or the cutting proxy.
    Tool("resume", "pincat",
         receiver=(PC, "serve", "--json", "--identity", "{ident}", "--listen", AT, "--code",
                   "{code}", "--out", "{dst}"),
         sender=SEND_JSON + ("{src}",), result="{dst}/big.bin"),
]


def _with_baseline(argv):
    return tuple("{baseline}" if a == PC else a for a in argv)


# An earlier pincat in the throughput case, held to "within 5% of it", so a
# change can be checked against the build before it in the same run.
if BASELINE:
    THROUGHPUT_TOOLS.insert(1, Tool(
        "throughput", "pincat " + BASELINE_NAME,
        receiver=_with_baseline(SERVE) + ("--out", "{out}"),
        sender=_with_baseline(SEND) + ("{src}",),
        result="{out}/payload.bin",
        targets=(Target("MB/s", 0.95, label="MB/s >= 0.95x the tool's (within 5%)"),),
        note="the same command with an earlier build"))
    # And in the small-files case, beside pincat (no target: a comparison).
    SMALL_FILES_TOOLS.insert(1, Tool(
        "small files", "pincat " + BASELINE_NAME,
        receiver=_with_baseline(SERVE) + ("--out", "{dst}"),
        sender=_with_baseline(SEND) + ("{src}",),
        result="{dst}/tree", note="the same command with an earlier build"))

TOOLS = (THROUGHPUT_TOOLS + STARTUP_TOOLS + LATENCY_TOOLS + SMALL_FILES_TOOLS + FORWARD_TOOLS
         + PIPE_TOOLS + ROUND_TRIPS_TOOLS + SYNC_TOOLS + RESUME_TOOLS)


def case_tools(case):
    """(runnable tools, {name: why skipped}) of one case, in table order."""
    run, skipped = [], {}
    for t in TOOLS:
        if t.case != case:
            continue
        why = t.missing()
        if why:
            log(f"{case}: {t.name}: {why}")
            skipped[t.name] = why
        else:
            run.append(t)
    return run, skipped


def skipped_outcomes(case, label, skipped):
    """Summary rows for the targets of tools that did not run."""
    return [(t.subject(label, tool.name), "-", t.text(), skipped[tool.name])
            for tool in TOOLS if tool.case == case and tool.name in skipped
            for t in tool.targets]
