//! A handler's environment: an allowlist of pincat's own (never all of
//! it: no key, no code, nothing else set there), and who sent the message,
//! from the verified handshake only.

use std::ffi::OsString;

use super::{About, Peer};

/// The variables of pincat's environment every handler gets (those set).
pub const BASIC: [&str; 10] = [
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
];

/// The environment of one handler: the basic variables and the `extra`
/// ones that `lookup` finds set (a name starting with `PINCAT_` never: those
/// are pincat's to set), then the peer's and the message's.
pub(crate) fn handler_env(
    lookup: &dyn Fn(&str) -> Option<OsString>,
    extra: &[String],
    peer: &Peer,
    about: &About,
) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let passed = BASIC
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .filter(|n| !n.starts_with("PINCAT_"));
    for name in passed {
        if env.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(v) = lookup(name) {
            env.push((name.to_string(), v));
        }
    }
    let mut set = |k: &str, v: String| env.push((k.to_string(), v.into()));
    set("PINCAT_PEER_ADDR", peer.addr.to_string());
    if let Some(f) = peer.fingerprint {
        set("PINCAT_PEER_FINGERPRINT", f.to_string());
    }
    if let Some(k) = peer.spki {
        set("PINCAT_PEER_SPKI", k.to_string());
    }
    if let Some(n) = &peer.name {
        set("PINCAT_PEER_NAME", n.clone());
    }
    if let Some(n) = &about.name {
        set("PINCAT_MESSAGE_NAME", n.clone());
    }
    if let Some(b) = about.bytes {
        set("PINCAT_MESSAGE_BYTES", b.to_string());
    }
    if let Some(p) = &about.files_list {
        env.push(("PINCAT_FILES_LIST".into(), p.clone().into_os_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{Fingerprint, Pin};

    fn peer() -> Peer {
        Peer {
            addr: "127.0.0.1:5555".parse().unwrap(),
            fingerprint: Some(Fingerprint::of_der(b"cert")),
            spki: Some(Pin::Spki(Fingerprint::of_der(b"key"))),
            name: Some("builder".into()),
        }
    }

    fn lookup(name: &str) -> Option<OsString> {
        let set = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/u"),
            ("SECRET_TOKEN", "s3cret"),
            ("JOB_ID", "42"),
            ("PINCAT_IDENTITY", "-----BEGIN PRIVATE KEY-----"),
            ("PINCAT_PEER_NAME", "forged"),
        ];
        set.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| OsString::from(v))
    }

    fn get<'a>(env: &'a [(String, OsString)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn only_the_allowlist_and_the_verified_peer() {
        let about = About {
            name: Some("report.json".into()),
            bytes: Some(12),
            files_list: None,
        };
        let extra = [
            "JOB_ID".to_string(),
            "PINCAT_IDENTITY".into(),
            "PINCAT_PEER_NAME".into(),
            "PATH".into(),
        ];
        let env = handler_env(&lookup, &extra, &peer(), &about);
        assert_eq!(get(&env, "PATH"), Some("/usr/bin"));
        assert_eq!(get(&env, "HOME"), Some("/home/u"));
        assert_eq!(get(&env, "JOB_ID"), Some("42"));
        assert_eq!(get(&env, "SECRET_TOKEN"), None);
        assert_eq!(get(&env, "PINCAT_IDENTITY"), None);
        assert_eq!(get(&env, "PINCAT_PEER_NAME"), Some("builder"));
        assert_eq!(get(&env, "PINCAT_PEER_ADDR"), Some("127.0.0.1:5555"));
        let fp = Fingerprint::of_der(b"cert").to_string();
        assert_eq!(get(&env, "PINCAT_PEER_FINGERPRINT"), Some(fp.as_str()));
        assert!(
            get(&env, "PINCAT_PEER_SPKI")
                .unwrap()
                .starts_with("sha256//")
        );
        assert_eq!(get(&env, "PINCAT_MESSAGE_NAME"), Some("report.json"));
        assert_eq!(get(&env, "PINCAT_MESSAGE_BYTES"), Some("12"));
        assert_eq!(get(&env, "PINCAT_FILES_LIST"), None);
        // Each name once (PATH was asked for twice).
        let mut names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), env.len());
    }

    #[test]
    fn an_anonymous_peer_gets_no_identity_variables() {
        let p = Peer {
            fingerprint: None,
            spki: None,
            name: None,
            ..peer()
        };
        let env = handler_env(&|_| None, &[], &p, &About::default());
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["PINCAT_PEER_ADDR"]);
    }
}
