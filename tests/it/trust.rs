//! Trust that lasts: the key exchange pincat negotiates (hybrid
//! post-quantum by default, classical with peers that lack it).

use std::process::{Command, Stdio};

use crate::util::tools::cmd_exists;
use crate::util::{Server, WAIT, send, text, wait_output};

#[test]
fn pincat_peers_agree_on_hybrid_post_quantum_key_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "got"]);
    let out = send(&srv.addr, &srv.fingerprint, &["--json"], b"hello");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ev = srv.wait_event("connected");
    assert_eq!(ev["key_exchange"], "X25519MLKEM768", "{ev}");
    assert_eq!(ev["tls_version"], "TLSv1_3");
    assert!(ev["cipher_suite"].as_str().unwrap().starts_with("TLS13_"));
    // The sender reports the same on its side.
    let sent = text(&out.stderr);
    assert!(
        sent.contains("\"key_exchange\":\"X25519MLKEM768\""),
        "{sent}"
    );
}

#[test]
fn a_classical_peer_still_gets_in() {
    if !cmd_exists("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--allow-any", "--raw", "--out", "got"]);
    let client = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(printf classical; sleep 0.5) | openssl s_client -nocommands -tls1_3 -groups X25519 -connect {}",
            srv.addr
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_output(client, WAIT);
    let ev = srv.wait_event("connected");
    assert_eq!(ev["key_exchange"], "X25519", "{ev}");
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(std::fs::read(dir.path().join("got")).unwrap(), b"classical");
}

#[test]
fn identities_come_from_the_environment_and_unprotected_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let new_id = |name: &str| {
        let p = dir.path().join(name);
        let out = crate::util::pincat()
            .args(["identity", "new"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        (p, text(&out.stdout).trim().to_string())
    };
    let (srv_file, srv_fp) = new_id("server.id");
    let (cli_file, cli_fp) = new_id("client.id");
    // The receiver's identity and the sender's client certificate, both
    // from environment variables: no key file on either side.
    let srv_pem = std::fs::read_to_string(&srv_file).unwrap();
    let cli_pem = std::fs::read_to_string(&cli_file).unwrap();
    let mut srv = Server::start_with(
        dir.path(),
        &[
            "--identity",
            "env:PINCAT_TEST_SRV",
            "--allow",
            &cli_fp,
            "--out",
            "got",
        ],
        |c| {
            c.env("PINCAT_TEST_SRV", &srv_pem);
        },
    );
    assert_eq!(srv.fingerprint, srv_fp);
    let child = crate::util::cli::send_cmd(&srv.addr, &srv.fingerprint)
        .args(["--identity", "env:PINCAT_TEST_CLI"])
        .env("PINCAT_TEST_CLI", &cli_pem)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, WAIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_event("connected")["fingerprint"], cli_fp.as_str());
    // An identity file others can read is refused, with what to do.
    std::fs::set_permissions(&cli_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = crate::util::pincat()
        .args(["send", "127.0.0.1:9", "--pin", &srv_fp, "--identity"])
        .arg(&cli_file)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let msg = text(&out.stderr);
    assert!(
        msg.contains("readable by others") && msg.contains("chmod 600"),
        "{msg}"
    );
    // A variable that is not set says so.
    let out = crate::util::pincat()
        .args([
            "send",
            "127.0.0.1:9",
            "--pin",
            &srv_fp,
            "--identity",
            "env:PINCAT_TEST_UNSET",
        ])
        .env_remove("PINCAT_TEST_UNSET")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("not set"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn identity_and_fingerprint_print_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("me.id");
    let out = crate::util::pincat()
        .args(["identity", "new", "--json"])
        .arg(&id)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fp = made["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 64);
    assert_eq!(made["file"], id.to_str().unwrap());
    let out = crate::util::pincat()
        .args(["fingerprint", "--json"])
        .arg(&id)
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["fingerprint"], fp.as_str());
    // The same fingerprint from the live server, without sending anything.
    let mut srv = Server::start(dir.path(), &["--identity", id.to_str().unwrap()]);
    let out = crate::util::pincat()
        .args(["fingerprint", "--json", "--remote", &srv.addr])
        .output()
        .unwrap();
    let remote: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(remote["fingerprint"], fp.as_str());
    assert_eq!(remote["remote"], srv.addr.as_str());
    srv.kill();
}

/// A second identity file for the key of `id`: a new self-signed
/// certificate made by openssl (a renewal), mode 0600.
fn renewed(dir: &std::path::Path, id: &std::path::Path) -> std::path::PathBuf {
    let pem = std::fs::read_to_string(id).unwrap();
    let key_end =
        pem.find("-----END PRIVATE KEY-----").unwrap() + "-----END PRIVATE KEY-----\n".len();
    let key = dir.join("key.pem");
    std::fs::write(&key, &pem[..key_end]).unwrap();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-key",
            "key.pem",
            "-out",
            "renewed.pem",
            "-days",
            "2",
            "-subj",
            "/CN=renewed",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.join("renewed.id");
    let cert = std::fs::read_to_string(dir.join("renewed.pem")).unwrap();
    std::fs::write(&out, format!("{}{cert}", &pem[..key_end])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
    out
}

fn spki_of(file: &std::path::Path) -> String {
    let out = crate::util::pincat()
        .args(["fingerprint", "--spki"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn public_key_pins_survive_a_renewed_certificate_and_any_listed_pin_matches() {
    if !cmd_exists("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("server.id");
    let made = crate::util::pincat()
        .args(["identity", "new"])
        .arg(&id)
        .output()
        .unwrap();
    let old_fp = text(&made.stdout).trim().to_string();
    let spki = spki_of(&id);
    // The same pin as openssl's recipe.
    let recipe = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64")
        .stdin(std::fs::File::open(&id).unwrap())
        .output()
        .unwrap();
    assert_eq!(spki, format!("sha256//{}", text(&recipe.stdout).trim()));
    // The server renews its certificate on the same key.
    let renewed = renewed(dir.path(), &id);
    let send_with = |pins: &[&str]| {
        let mut srv = Server::start(
            dir.path(),
            &[
                "--allow-any",
                "--identity",
                renewed.to_str().unwrap(),
                "--out",
                "got",
            ],
        );
        let mut args = Vec::new();
        for p in pins {
            args.extend(["--pin", *p]);
        }
        let c = crate::util::pincat()
            .args(["send", &srv.addr])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(c, WAIT);
        srv.kill();
        let _ = std::fs::remove_file(dir.path().join("got"));
        (out.status.code(), text(&out.stderr))
    };
    assert_eq!(send_with(&[&spki]).0, Some(0), "the key pin passes");
    let (code, msg) = send_with(&[&old_fp]);
    assert_eq!(code, Some(3), "the old certificate pin fails: {msg}");
    assert!(msg.contains(&old_fp), "{msg}");
    // Rotation: any listed pin matches; none right is a mismatch.
    let other = "ab".repeat(32);
    assert_eq!(send_with(&[&other, &spki]).0, Some(0));
    assert_eq!(send_with(&[&other, &old_fp]).0, Some(3));
    assert!(
        crate::util::pincat()
            .args(["send", "h:1", "--pin", "sha256//abc"])
            .output()
            .unwrap()
            .status
            .code()
            == Some(2)
    );
}

#[test]
fn allow_lists_take_public_key_pins_too() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("client.id");
    let made = crate::util::pincat()
        .args(["identity", "new"])
        .arg(&id)
        .output()
        .unwrap();
    assert!(made.status.success());
    let spki = spki_of(&id);
    let other = format!("sha256//{}", "A".repeat(43) + "=");
    let try_allow = |allow: &[&str]| {
        let mut args = vec!["--out", "got"];
        for a in allow {
            args.extend(["--allow", *a]);
        }
        let mut srv = Server::start(dir.path(), &args);
        let c = crate::util::cli::send_cmd(&srv.addr, &srv.fingerprint)
            .args(["--identity", id.to_str().unwrap()])
            .spawn()
            .unwrap();
        let out = wait_output(c, WAIT);
        srv.kill();
        let _ = std::fs::remove_file(dir.path().join("got"));
        out.status.code()
    };
    assert_eq!(try_allow(&[&spki]), Some(0));
    assert_eq!(try_allow(&[&other, &spki]), Some(0));
    assert_eq!(try_allow(&[&other]), Some(5));
}
