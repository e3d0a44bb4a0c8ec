//! A real NAT built from network namespaces: an "internet" holding the
//! relay at [`RELAY_IP`], and two private networks (10.1.0.0/24 with host
//! A at 10.1.0.2, 10.2.0.0/24 with host B at 10.2.0.2), each behind its own router that
//! masquerades with nftables. Nothing routes to a private network from
//! outside it, so A and B can reach each other only through the relay.
//!
//! Needs root, `ip` and `nft`: without them [`Nat::build`] says why and
//! returns `None` (a failure under CI=true). Namespaces are removed on
//! drop; ones a killed test run left are removed at the next start.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::tools::cmd_exists;

/// The relay's address in the "internet".
pub const RELAY_IP: &str = "203.0.113.10";
/// Host A's address in its private network.
pub const A_IP: &str = "10.1.0.2";

/// Where a command runs.
#[derive(Debug, Clone, Copy)]
pub enum Host {
    /// The internet, where the relay is.
    Inet,
    /// Behind the first NAT.
    A,
    /// Behind the second NAT.
    B,
}

/// The namespaces of one test, removed on drop.
pub struct Nat {
    prefix: String,
}

/// The prefix every namespace of this suite starts with.
const PREFIX: &str = "pcnat";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// This process's mark in namespace names: its pid and start time (a
/// leftover of an earlier process with the same pid is still removed).
fn mark() -> &'static str {
    static MARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARK.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000_000);
        format!("{}t{t}", std::process::id())
    })
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Says why the NAT tests cannot run here: a failure under CI=true.
fn skip(why: &str) -> Option<Nat> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the NAT tests cannot run: {why}"
    );
    eprintln!("skipped: the NAT tests need {why}");
    None
}

impl Nat {
    /// Builds the two NATs and the internet; `None` (said) when this
    /// machine cannot.
    pub fn build() -> Option<Nat> {
        if !rustix::process::geteuid().is_root() {
            return skip("root (network namespaces)");
        }
        for tool in ["ip", "nft"] {
            if !cmd_exists(tool) {
                return skip(
                    "`ip` and `nft` (packages iproute2 and nftables; .ci/run installs them)",
                );
            }
        }
        remove_leftovers();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let nat = Nat {
            prefix: format!("{PREFIX}{}x{n}", mark()),
        };
        if let Err(e) = nat.make() {
            return skip(&format!("namespaces, veth and nftables to work ({e})"));
        }
        Some(nat)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// The namespace a host runs in.
    pub fn of(&self, h: Host) -> String {
        self.ns(match h {
            Host::Inet => "inet",
            Host::A => "a",
            Host::B => "b",
        })
    }

    /// `PROGRAM` to run in host `h`'s namespace.
    pub fn cmd(&self, h: Host, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.of(h), program]);
        c
    }

    fn make(&self) -> Result<(), String> {
        for n in ["inet", "ra", "rb", "a", "b"] {
            ip(&["netns", "add", &self.ns(n)])?;
            ip(&["-n", &self.ns(n), "link", "set", "lo", "up"])?;
        }
        let inet = self.ns("inet");
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{RELAY_IP}/32"),
            "dev",
            "lo",
        ])?;
        self.router("ra", "a", "198.51.100", 1, "10.1.0")?;
        self.router("rb", "b", "198.51.100", 5, "10.2.0")
    }

    /// Router `r` between the internet (on the /30 at `.up`..`.up+1` of
    /// `public`) and host `h`'s private network `lan`.0/24.
    fn router(&self, r: &str, h: &str, public: &str, up: u8, lan: &str) -> Result<(), String> {
        let (inet, rns, hns) = (self.ns("inet"), self.ns(r), self.ns(h));
        let down = up + 1;
        for line in [
            format!("link add wan netns {rns} type veth peer name {r} netns {inet}"),
            format!("-n {inet} addr add {public}.{up}/30 dev {r}"),
            format!("-n {inet} link set {r} up"),
            format!("-n {rns} addr add {public}.{down}/30 dev wan"),
            format!("-n {rns} link set wan up"),
            format!("-n {rns} route add default via {public}.{up}"),
            format!("link add lan netns {rns} type veth peer name eth0 netns {hns}"),
            format!("-n {rns} addr add {lan}.1/24 dev lan"),
            format!("-n {rns} link set lan up"),
            format!("-n {hns} addr add {lan}.2/24 dev eth0"),
            format!("-n {hns} link set eth0 up"),
            format!("-n {hns} route add default via {lan}.1"),
        ] {
            ip(&line.split_whitespace().collect::<Vec<_>>())?;
        }
        in_ns(&rns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"], None)?;
        let rules = "table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  oifname \"wan\" masquerade\n }\n}\n";
        in_ns(&rns, &["nft", "-f", "-"], Some(rules))
    }
}

/// Runs `args` in the namespace `ns`, with `stdin` as its input.
fn in_ns(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c.stdin(match stdin {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| e.to_string())?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        for n in ["a", "b", "ra", "rb", "inet"] {
            let _ = ip(&["netns", "del", &self.ns(n)]);
        }
    }
}

/// Removes the namespaces of test runs whose process is gone.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let ours = rest.starts_with(&format!("{}x", mark()));
        let other_here = pid == std::process::id().to_string() && !ours;
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if ours || (alive && !other_here) {
            continue;
        }
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
