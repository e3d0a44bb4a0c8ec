//! The command line, clap only: one struct per subcommand, parsed into real
//! types (fingerprints, socket addresses, durations) at the edge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pincat::Pin;

/// Move data between two machines over TLS 1.3, trusting only a pinned
/// certificate fingerprint.
#[derive(Debug, Parser)]
#[command(name = "pincat", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive: listen, print the fingerprint and a send command, store what arrives.
    Serve(ServeArgs),
    /// Send stdin or files to a pinned receiver; exit 0 only on its receipt.
    Send(SendArgs),
    /// Offer stdin or files: listen, print the fingerprint and a get command, give to takers.
    Offer(OfferArgs),
    /// Fetch from a pinned `pincat offer` and store it as serve would; exit 0 once durable.
    Get(GetArgs),
    /// Full duplex: stdin to the peer and the peer to stdout, at the same time.
    Pipe(PipeArgs),
    /// Carry a TCP service over pinned TLS (exposing end: --listen; using end: --local).
    Forward(ForwardArgs),
    /// Manage persistent identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Print the SHA-256 fingerprint of a certificate/identity file or of a remote server.
    Fingerprint(FingerprintArgs),
    /// Known peers: names for HOST:PORT and their pins, usable in place of HOST:PORT --pin.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man,
}

/// Output options shared by serve and send.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print every event as one JSON object per line on stderr.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print nothing but errors and warnings.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also print each connection's peer and TLS parameters (version, cipher suite, key exchange).
    #[arg(long, short, conflicts_with = "quiet")]
    pub verbose: bool,
}

/// `pincat serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one [default: [::]:7878, or 0.0.0.0:7878 without IPv6].
    #[arg(long, short, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where to store: a file for a stream (default stdout), a directory for files (default .).
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Use this persistent identity instead of an ephemeral one (a file, mode 0600, or env:VAR holding its PEM).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Who may send (without these: the sender with the code).
    #[command(flatten)]
    pub listening: ListenArgs,
    /// The code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// Keep serving after the first transfer, with many senders at once.
    #[arg(long)]
    pub keep_open: bool,
    /// Most connections handled at once; more are refused.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_conns: u32,
    /// Most TLS handshakes in progress at once; past it the oldest is cut, so a flood cannot lock out real senders.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes: u32,
    /// Limit for a sender's TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Drop a connection that stays silent this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Give up (exit 6) if no transfer has started within DURATION; omit to wait forever.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// No pincat framing: the TLS plaintext is the data, until close_notify (for openssl, ncat, socat).
    #[arg(long)]
    pub raw: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pincat send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The receiver, as HOST:PORT (with --pin or --ca), or the NAME of a known peer (see `pincat peers`).
    #[arg(value_name = "HOST:PORT|NAME")]
    pub addr: String,
    /// Files and directories to send; none, or "-", sends stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// How to reach and trust the receiver.
    #[command(flatten)]
    pub dial: DialArgs,
    /// The receiver's code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// The identity (as client certificate, for receivers that use --allow) and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up when the receiver stays silent this long (the receipt included).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// No pincat framing: send stdin (or one file) as plain bytes over the pinned session,
    /// print what the peer answers; for openssl s_server, ncat --ssl, socat.
    #[arg(long)]
    pub raw: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Who may connect: shared by offer, pipe --listen and forward --listen.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Only accept peers presenting this client certificate: its fingerprint, or its key's pin sha256//BASE64 (repeatable).
    #[arg(long, value_name = "PIN")]
    pub allow: Vec<Pin>,
    /// Only accept peers whose pin is listed in FILE (one per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub allow_file: Vec<PathBuf>,
    /// Also accept peers whose client certificate was issued by this CA (PEM certificate(s)) and is valid now.
    #[arg(long, value_name = "CA.pem")]
    pub allow_ca: Option<PathBuf>,
    /// With --allow-ca: only certificates carrying this name (DNS name or IP; repeatable, any one matches).
    #[arg(long, value_name = "NAME", requires = "allow_ca")]
    pub allow_name: Vec<String>,
    /// Serve anyone who connects first: no code, no allow list (for raw peers such as openssl or ncat).
    #[arg(long, conflicts_with_all = ["allow", "allow_file", "allow_ca", "code_words"])]
    pub allow_any: bool,
    /// Words in the generated code (each about 10.3 bits; the default 3 is about 31 bits).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(2..=16), conflicts_with_all = ["allow", "allow_file", "allow_ca"])]
    pub code_words: Option<u8>,
}

/// The pairing code: on a listener a fixed one instead of a fresh one, on a
/// dialer the listener's.
#[derive(Debug, Args)]
pub struct CodeArgs {
    /// The code: CODE, env:VAR (read, then removed from the environment), or - (read a line from the terminal, else stdin). A command line is visible to every local user: prefer env:VAR or -.
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
}

/// How many at once: offer and forward --listen (a pipe takes one peer).
#[derive(Debug, Args)]
pub struct CapsArgs {
    /// Most connections past the TLS handshake at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_conns: u32,
    /// Most TLS handshakes in progress at once; past it the oldest is cut.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes: u32,
}

/// The identity and handshake limit every verb has.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Use this persistent identity (a file, mode 0600, or env:VAR holding its PEM; listening: instead of an ephemeral one; dialing: as client certificate for --allow).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Limit for the TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
}

/// Dialing options shared by send, get, pipe and forward --local.
#[derive(Debug, Args)]
pub struct DialArgs {
    /// The listening side's certificate fingerprint (SHA-256 hex; any case, colons optional) or public-key pin sha256//BASE64; repeat for several (any one matches). Required with HOST:PORT unless --ca or --code is given.
    #[arg(long, short, value_name = "PIN")]
    pub pin: Vec<Pin>,
    /// Trust on first use: a known peer NAME with no pin yet is trusted with the key it proves it holds, which is recorded (loudly) for next time.
    #[arg(long, conflicts_with = "pin")]
    pub tofu: bool,
    /// Trust a server whose certificate this private CA issued (PEM certificate(s)), valid now and carrying --name.
    #[arg(long, value_name = "CA.pem", conflicts_with = "tofu")]
    pub ca: Option<PathBuf>,
    /// With --ca: the name the server's certificate must carry [default: the HOST dialed].
    #[arg(long, value_name = "NAME", requires = "ca")]
    pub name: Option<String>,
    /// Limit for each TCP connection attempt.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Keep retrying the connection this long while the listener is not up yet; omit to try once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_for: Option<Duration>,
    /// With --code: save the listener's key, once the code confirmed it, as a known peer NAME (then dial NAME).
    #[arg(long, value_name = "NAME", requires = "code", value_parser = parse_peer_name)]
    pub save: Option<String>,
}

/// `pincat offer`.
#[derive(Debug, Args)]
pub struct OfferArgs {
    /// Files and directories to offer; none, or "-", offers stdin (to one taker).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free one [default: [::]:7878, or 0.0.0.0:7878 without IPv6].
    #[arg(long, short, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Who may connect.
    #[command(flatten)]
    pub common: ListenArgs,
    /// The code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// How many at once.
    #[command(flatten)]
    pub caps: CapsArgs,
    /// Give the same files to many takers instead of exiting after the first.
    #[arg(long)]
    pub keep_open: bool,
    /// With --keep-open: exit 0 after N confirmed gets.
    #[arg(long, value_name = "N", requires = "keep_open", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_gets: Option<u64>,
    /// Stop offering (exit 0) DURATION after starting.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expire: Option<Duration>,
    /// Drop a taker that makes no progress this long (the receipt included).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Give up (exit 6) if no taker connected within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pincat get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The offering side, as HOST:PORT (with --pin), or the NAME of a known peer.
    #[arg(value_name = "HOST:PORT|NAME")]
    pub addr: String,
    /// Where to store: a file for a stream (default stdout), a directory for files (default .).
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Dialing options (--pin or --code is required).
    #[command(flatten)]
    pub dial: DialArgs,
    /// The offering side's code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// Give up when the offering side stays silent this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pincat pipe`.
#[derive(Debug, Args)]
pub struct PipeArgs {
    /// The listening end, as HOST:PORT (with --pin) or the NAME of a known peer (omit with --listen).
    #[arg(
        value_name = "HOST:PORT|NAME",
        required_unless_present = "listen",
        conflicts_with = "listen"
    )]
    pub addr: Option<String>,
    /// Listen on ADDR:PORT instead of dialing, and print a paste-ready dial line.
    #[arg(long, short, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Listening options (with --listen).
    #[command(flatten)]
    pub listening: ListenArgs,
    /// The code (the listener's own, or the one its line printed).
    #[command(flatten)]
    pub code: CodeArgs,
    /// Dialing options (without --listen; --pin or --code is required).
    #[command(flatten)]
    pub dial: DialArgs,
    /// End the pipe when nothing moved for DURATION [default: no limit].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Give up (exit 6) if no peer connected within DURATION (with --listen).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Connect this program's stdin/stdout to the session instead of ours (no shell); everything after it is its arguments, so give it last.
    #[arg(long, value_name = "PROG", num_args = 1.., allow_hyphen_values = true)]
    pub exec: Vec<std::ffi::OsString>,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pincat forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Where connections go: the plaintext service (with --listen) or the exposing end (with --local: HOST:PORT with --pin, or a known peer's NAME).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// Exposing end: accept pinned TLS here and relay each connection to --to.
    #[arg(
        long,
        short,
        value_name = "ADDR:PORT",
        required_unless_present = "local",
        conflicts_with = "local"
    )]
    pub listen: Option<SocketAddr>,
    /// Using end: listen in plaintext here and carry each connection to --to over pinned TLS.
    #[arg(long, value_name = "ADDR:PORT")]
    pub local: Option<SocketAddr>,
    /// Who may connect (exposing end).
    #[command(flatten)]
    pub listening: ListenArgs,
    /// How many at once.
    #[command(flatten)]
    pub caps: CapsArgs,
    /// The code (the exposing end's own, or the one its line printed).
    #[command(flatten)]
    pub code: CodeArgs,
    /// Dialing options (using end; --pin or --code is required).
    #[command(flatten)]
    pub dial: DialArgs,
    /// End a connection where nothing moved this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pincat identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create a new identity file (key mode 0600 + certificate, PEM) and print its fingerprint.
    New {
        /// Where to write it; never overwritten.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Make a CA identity, to issue identities with --issuer.
        #[arg(long, conflicts_with = "issuer")]
        ca: bool,
        /// Issue the new identity from this CA identity instead of self-signing it (needs --name).
        #[arg(long, value_name = "CA.id", requires = "name")]
        issuer: Option<PathBuf>,
        /// With --issuer: the name(s) the certificate carries (DNS name or IP; repeatable).
        #[arg(long, value_name = "NAME", requires = "issuer")]
        name: Vec<String>,
        /// How long it is valid [default: 24h with --issuer, 3650d with --ca; self-signed: forever].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        valid: Option<Duration>,
        /// Print one JSON object ({"file", "fingerprint", "spki", ...}) instead of the bare fingerprint.
        #[arg(long)]
        json: bool,
    },
    /// Print an identity's certificate (PEM; public): for a CA, the file its peers give to --ca/--allow-ca.
    Cert {
        /// The identity file (or env:VAR).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `pincat fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// A certificate or identity file (PEM or DER).
    #[arg(
        value_name = "FILE",
        required_unless_present = "remote",
        conflicts_with = "remote"
    )]
    pub file: Option<PathBuf>,
    /// Connect to HOST:PORT (or a known peer's NAME), print the fingerprint it presents, and send nothing.
    #[arg(long, value_name = "HOST:PORT|NAME")]
    pub remote: Option<String>,
    /// With --remote: print the key only once the listener confirmed this code (the code exchange counts as one of its attempts).
    #[arg(long, value_name = "CODE", requires = "remote")]
    pub code: Option<String>,
    /// Limit for connecting and the handshake with --remote.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Print one JSON object ({"fingerprint", and "file" or "remote"}; with --spki, {"spki", ...}) instead of the bare pin.
    #[arg(long)]
    pub json: bool,
    /// Print the public-key pin (sha256//BASE64 of the SubjectPublicKeyInfo) instead: it survives a renewed certificate on the same key.
    #[arg(long)]
    pub spki: bool,
}

/// `pincat peers ...`: the known-peers file (PINCAT_PEERS, else
/// $XDG_CONFIG_HOME/pincat/peers, else ~/.config/pincat/peers).
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Remember a peer by NAME; without --pin, a first `--tofu` dial records its key.
    Add {
        /// Its name: letters, digits, '.', '_', '-' (no ':', so never taken for HOST:PORT).
        #[arg(value_name = "NAME", value_parser = parse_peer_name)]
        name: String,
        /// Where it listens.
        #[arg(value_name = "HOST:PORT", value_parser = parse_peer_addr)]
        addr: String,
        /// Its certificate fingerprint or public-key pin sha256//BASE64; repeat for several.
        #[arg(long, short, value_name = "PIN")]
        pin: Vec<Pin>,
        /// Replace an existing peer of that name (else that is an error).
        #[arg(long)]
        replace: bool,
    },
    /// List the known peers (aligned lines, or one JSON object with --json).
    List {
        /// Print one JSON object {"file", "peers": [{"name", "addr", "pins"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Forget a peer.
    Remove {
        /// Its name.
        #[arg(value_name = "NAME", value_parser = parse_peer_name)]
        name: String,
    },
}

fn parse_peer_name(s: &str) -> Result<String, String> {
    pincat::peers::check_name(s).map(|()| s.to_string())
}

fn parse_peer_addr(s: &str) -> Result<String, String> {
    pincat::peers::check_addr(s).map(|()| s.to_string())
}

/// `pincat completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Parses `250ms`, `10s`, `5m`, `2h`, or a bare number of seconds. Zero is
/// refused for every duration flag: it meant the default for one flag, "fail
/// at once" for another and an OS error for a third, so no flag takes it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 10s, 5m, 1h, 7d)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "unknown duration unit {u:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{s:?} is too long a duration"));
    }
    let d = Duration::from_secs_f64(secs);
    if d.is_zero() {
        return Err(ZERO_DURATION.to_string());
    }
    Ok(d)
}

/// The one message for a zero duration, whichever flag it was given to.
const ZERO_DURATION: &str =
    "a duration must be more than zero; omit the flag for its default (or for no limit)";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn zero_durations_are_refused() {
        for zero in ["0", "0s", "0ms", "0.0", "0m", "0h", "0.0000000001"] {
            assert_eq!(
                parse_duration(zero),
                Err(ZERO_DURATION.to_string()),
                "{zero}"
            );
        }
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn zero_is_the_same_usage_error_for_every_duration_flag() {
        let pin = "ab".repeat(32);
        let cases: &[(&[&str], &str)] = &[
            (&["serve"], "--handshake-timeout"),
            (&["serve"], "--idle-timeout"),
            (&["serve"], "--timeout"),
            (&["send", "h:1", "--pin", &pin], "--connect-timeout"),
            (&["send", "h:1", "--pin", &pin], "--retry-for"),
            (&["send", "h:1", "--pin", &pin], "--handshake-timeout"),
            (&["send", "h:1", "--pin", &pin], "--idle-timeout"),
            (&["fingerprint", "--remote", "h:1"], "--connect-timeout"),
            (&["offer"], "--expire"),
            (&["offer"], "--idle-timeout"),
            (&["offer"], "--timeout"),
            (&["offer"], "--handshake-timeout"),
            (&["get", "h:1", "--pin", &pin], "--connect-timeout"),
            (&["get", "h:1", "--pin", &pin], "--retry-for"),
            (&["get", "h:1", "--pin", &pin], "--handshake-timeout"),
            (&["get", "h:1", "--pin", &pin], "--idle-timeout"),
            (&["pipe", "h:1"], "--connect-timeout"),
            (&["pipe", "h:1"], "--retry-for"),
            (&["pipe", "h:1"], "--handshake-timeout"),
            (&["pipe", "h:1"], "--idle-timeout"),
            (&["pipe", "h:1"], "--timeout"),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--connect-timeout",
            ),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--retry-for",
            ),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--handshake-timeout",
            ),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--idle-timeout",
            ),
        ];
        for (args, flag) in cases {
            for zero in ["0", "0s", "0ms"] {
                let mut argv = vec!["pincat"];
                argv.extend_from_slice(args);
                argv.extend([*flag, zero]);
                let err = Cli::try_parse_from(argv).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{flag} {zero}");
                let msg = err.to_string();
                assert!(msg.contains(flag) && msg.contains(ZERO_DURATION), "{msg}");
            }
        }
        // Every duration flag is in the list above.
        let mut seen = 0;
        for sub in Cli::command().get_subcommands() {
            for a in sub.get_arguments() {
                if a.get_value_names() == Some(&["DURATION".into()]) {
                    let flag = format!("--{}", a.get_long().unwrap_or_default());
                    let sub = sub.get_name();
                    assert!(
                        cases.iter().any(|(c, f)| c[0] == sub && *f == flag),
                        "{sub} {flag} is not tested"
                    );
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, cases.len());
    }

    #[test]
    fn bad_pin_is_a_usage_error_naming_the_flag() {
        let err = Cli::try_parse_from(["pincat", "send", "h:1", "--pin", "abcd"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--pin"), "{err}");
    }
}
