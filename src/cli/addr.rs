//! Addresses as people type them: the value parsers of every `--listen`
//! (and `forward --local`), and the precise refusal of the ncat form
//! `HOST PORT` on dialing verbs.
//!
//! A listening address is `PORT`, `:PORT`, `HOST:PORT`, `[IPv6]:PORT` or
//! `NAME:PORT`; a host name binds the first address it resolves to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;

use super::usage::usage;

/// The forms a listening address takes, for error messages.
const FORMS: &str = "give PORT, :PORT, HOST:PORT or [IPv6]:PORT";

/// All interfaces on `port`: IPv6 (which takes IPv4 too) where the host
/// has it, else IPv4.
pub fn all_interfaces(port: u16) -> SocketAddr {
    if TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok() {
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, port).into()
    }
}

/// A `--listen` value: a bare `PORT` or `:PORT` is all interfaces.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    parse_with(s, all_interfaces)
}

/// A `forward --local` value: a bare `PORT` or `:PORT` is loopback only,
/// since that plaintext entrance admits anyone who reaches it.
pub fn parse_local(s: &str) -> Result<SocketAddr, String> {
    parse_with(s, |port| (Ipv4Addr::LOCALHOST, port).into())
}

/// Parses `s`, a host-less port going to `bare(port)`.
fn parse_with(s: &str, bare: impl Fn(u16) -> SocketAddr) -> Result<SocketAddr, String> {
    let s = s.trim();
    let bare_port = s.strip_prefix(':').unwrap_or(s);
    if !bare_port.is_empty() && bare_port.bytes().all(|b| b.is_ascii_digit()) {
        return match bare_port.parse::<u16>() {
            Ok(port) => Ok(bare(port)),
            Err(_) => Err(format!("{bare_port} is not a port (0 to 65535)")),
        };
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':').filter(|_| s.parse::<IpAddr>().is_err()) else {
        return Err(missing_port(s));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port (0 to 65535); {FORMS}"))?;
    if host.contains(':') || host.starts_with('[') {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return match host.parse::<Ipv6Addr>() {
            Ok(_) => Err(format!(
                "write an IPv6 address in brackets: [{host}]:{port}"
            )),
            Err(_) => Err(format!("{host:?} is not an IPv6 address; {FORMS}")),
        };
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    {
        return Err(format!("{host:?} is not a host name; {FORMS}"));
    }
    resolve(host, port)
}

/// The message for a host without a port.
fn missing_port(s: &str) -> String {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("{s} has no port: write [{ip}]:PORT"),
        Ok(_) => format!("{s} has no port: write {s}:PORT"),
        Err(_) if s.is_empty() => format!("the address is empty; {FORMS}"),
        Err(_) => format!("{s:?} has no port; {FORMS}"),
    }
}

/// The first address `host` resolves to (IP literals are handled before).
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// The ncat form on a dialing verb (`pincat send 127.0.0.1 7878`): when
/// `target` has no port, is no known peer and no file, and `next` (the
/// argument after it) is a port number that names no file, the usage error
/// that says to type `HOST:PORT`. A verb without paths passes its stray
/// second argument as `next`.
pub fn ncat_form(verb: &str, target: &str, next: Option<&Path>) -> pincat::Result<()> {
    let Some(port) = next.and_then(Path::to_str) else {
        return Ok(());
    };
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if !is_port || port.parse::<u16>().is_err() || Path::new(port).exists() {
        return Ok(());
    }
    let has_port = target.contains(':') && target.parse::<Ipv6Addr>().is_err();
    if has_port || Path::new(target).exists() || super::via::known(target) {
        return Ok(());
    }
    let host = bracketed(target);
    Err(usage(format!(
        "type the address as one argument, HOST:PORT: pincat {verb} {host}:{port} (the port goes after a colon, not in the next argument)"
    )))
}

/// `host` as it goes before `:PORT`: an IPv6 address in brackets.
pub fn bracketed(host: &str) -> String {
    match host.parse::<Ipv6Addr>() {
        Ok(ip) => format!("[{ip}]"),
        Err(_) => host.to_string(),
    }
}

/// A verb without paths given a second argument (`stray`): the ncat form's
/// refusal when it is one (see [`ncat_form`]), else an unexpected argument.
/// `verb` is what precedes the target on the command line.
pub fn refuse_stray(verb: &str, target: Option<&str>, stray: Option<&Path>) -> pincat::Result<()> {
    let Some(stray) = stray else {
        return Ok(());
    };
    if let Some(target) = target {
        ncat_form(verb, target, Some(stray))?;
    }
    Err(usage(format!(
        "unexpected argument {:?}: pincat {verb} takes one HOST:PORT or NAME",
        stray.display().to_string()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_alone_are_every_interface() {
        for s in ["7878", ":7878", " 7878 "] {
            let a = parse_listen(s).unwrap();
            assert_eq!(a.port(), 7878);
            assert!(a.ip().is_unspecified(), "{s}: {a}");
        }
        assert_eq!(parse_listen("0").unwrap().port(), 0);
        assert!(parse_local("8080").unwrap().ip().is_loopback());
    }

    #[test]
    fn hosts_with_ports_parse() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(parse_listen("127.0.0.1:7000").unwrap(), v4);
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(parse_listen("[::1]:7000").unwrap(), v6);
        let named = parse_listen("localhost:7000").unwrap();
        assert!(named.ip().is_loopback() && named.port() == 7000, "{named}");
    }

    #[test]
    fn bad_forms_say_what_to_type() {
        let cases = [
            ("127.0.0.1", "127.0.0.1:PORT"),
            ("::1", "[::1]:PORT"),
            ("::1:7000", "[::1:7000]:PORT"),
            ("::ffff:1.2.3.4:80", "[::ffff:1.2.3.4]:80"),
            ("1.2.3.4:5:6", "not an IPv6"),
            ("host:99999", "not a port"),
            ("host:http", "not a port"),
            ("", "empty"),
            ("a b:1", "not a host name"),
            ("65536", "not a port"),
            (":99999", "not a port"),
            ("[nope]:1", "not an IPv6"),
        ];
        for (s, want) in cases {
            let e = parse_listen(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
            assert!(!e.contains('\n'), "{s:?}: {e}");
        }
    }

    #[test]
    fn the_ncat_form_is_refused_with_the_address_to_type() {
        let e = ncat_form("send", "127.0.0.1", Some(Path::new("7878"))).unwrap_err();
        let msg = super::super::usage::message(&e).unwrap();
        assert!(msg.contains("pincat send 127.0.0.1:7878"), "{msg}");
        let e = ncat_form("get", "::1", Some(Path::new("7878"))).unwrap_err();
        let msg = super::super::usage::message(&e).unwrap();
        assert!(msg.contains("[::1]:7878"), "{msg}");
        // A port in the target already, or a second argument that is no port.
        assert!(ncat_form("send", "h:1", Some(Path::new("7878"))).is_ok());
        assert!(ncat_form("send", "h", Some(Path::new("file.txt"))).is_ok());
        assert!(ncat_form("send", "h", Some(Path::new("99999"))).is_ok());
        assert!(ncat_form("send", "h", None).is_ok());
    }
}
