//! Unit tests of rendering and of the event sink: JSON shape, throttling,
//! escaping, and what each mode shows.

use super::*;
use serde_json::Value;
use std::sync::Arc;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_lines_are_single_objects_with_event_first_field() {
    let buf = Buf::default();
    let ev = Events::to_writer(Mode::Json, Box::new(buf.clone()));
    let fp = Fingerprint::of_der(b"x");
    ev.emit(Event::Listening {
        addr: "127.0.0.1:9".parse().unwrap(),
        fingerprint: fp,
        dial_addrs: vec!["a:9".into()],
        command: "pincat send a:9 --pin x".into(),
        short_command: None,
        code: None,
        open: false,
        hint: "sending",
        via: None,
    });
    ev.emit(Event::Error {
        peer: None,
        code: "timeout",
        message: "line\nbreak".into(),
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["event"], "listening");
    assert_eq!(v["fingerprint"], fp.to_string());
    assert!(
        lines[0].starts_with(r#"{"event":"listening""#),
        "{}",
        lines[0]
    );
    let v: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["code"], "timeout");
}

#[test]
fn progress_is_throttled_and_hidden_from_people() {
    let buf = Buf::default();
    let ev = Events::to_writer(Mode::Json, Box::new(buf.clone()));
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for i in 0..100 {
        ev.emit(Event::Progress {
            peer,
            bytes: i,
            total: None,
        });
    }
    let n = String::from_utf8(buf.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .count();
    assert_eq!(n, 1);
    let human = Buf::default();
    let ev = Events::to_writer(Mode::Human, Box::new(human.clone()));
    ev.emit(Event::Progress {
        peer,
        bytes: 1,
        total: None,
    });
    assert!(human.0.lock().unwrap().is_empty());
}

#[test]
fn peer_text_in_events_is_escaped_in_both_forms() {
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let nasty = "exe.\u{202E}txt\u{200B}\u{2028}\u{1b}[2J";
    let events = [
        Event::Error {
            peer: Some(peer),
            code: "exists",
            message: nasty.into(),
        },
        Event::Refused {
            peer,
            reason: Reason::Offer(RejectCode::BadName),
            fingerprint: None,
            message: nasty.into(),
        },
        Event::Warning {
            message: nasty.into(),
        },
        Event::TransferStarted {
            peer,
            giving: false,
            kind: Kind::Files,
            names: vec![nasty.into()],
            files: 1,
            bytes: Some(1),
            skipped: vec![nasty.into()],
        },
        Event::HandlerOutput {
            peer,
            fingerprint: None,
            line: nasty.into(),
        },
        Event::Handler {
            peer: Some(peer),
            status: "exit:3".into(),
            ok: false,
            message: nasty.into(),
            reply_bytes: 0,
        },
    ];
    for mode in [Mode::Json, Mode::Human] {
        let buf = Buf::default();
        let ev = Events::to_writer(mode, Box::new(buf.clone()));
        for e in events.clone() {
            ev.emit(e);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        for bad in ['\u{202E}', '\u{200B}', '\u{2028}', '\u{1b}'] {
            assert!(!text.contains(bad), "{mode:?}: {text:?}");
        }
        assert!(text.contains("\\u{202e}"), "{mode:?}: {text}");
        if mode == Mode::Json {
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let s = v["message"].as_str().or(v["names"][0].as_str());
                let s = s.or(v["line"].as_str()).unwrap();
                assert_eq!(s, "exe.\\u{202e}txt\\u{200b}\\u{2028}\\u{1b}[2J");
            }
        }
    }
}

#[test]
fn connected_needs_verbose_and_first_use_is_never_quiet() {
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let fp = Fingerprint::of_der(b"c");
    let connected = Event::Connected {
        peer,
        fingerprint: Some(fp),
        tls: TlsInfo {
            version: "TLSv1_3".into(),
            suite: "TLS13_AES_128_GCM_SHA256".into(),
            group: "X25519MLKEM768".into(),
        },
    };
    let first = Event::FirstUse {
        peer,
        name: "box\u{1b}[2J".into(),
        file: "peers".into(),
        pin: Pin::Spki(Fingerprint::of_der(b"k")),
        fingerprint: fp,
    };
    let out = |mode: Mode, verbose: bool| {
        let buf = Buf::default();
        let ev = Events::to_writer(mode, Box::new(buf.clone())).verbose(verbose);
        ev.emit(connected.clone());
        ev.emit(first.clone());
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    };
    let line = format!(
        "pincat: connected to {peer} (TLSv1.3, TLS13_AES_128_GCM_SHA256, X25519MLKEM768), certificate sha256:{fp}"
    );
    for mode in [Mode::Human, Mode::Quiet] {
        let plain = out(mode, false);
        assert!(
            !plain.contains("connected") && plain.contains("FIRST USE"),
            "{plain}"
        );
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert!(out(mode, true).starts_with(&line), "{mode:?}");
    }
    let json = out(Mode::Json, false);
    assert!(json.contains("\"event\":\"first-use\""), "{json}");
}

#[test]
fn sizes_read_well() {
    assert_eq!(human_bytes(10), "10 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(1 << 30), "1.0 GiB");
}

#[test]
fn a_handlers_failure_and_its_stderr_show_even_when_quiet() {
    let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let fp = Fingerprint::of_der(b"peer");
    let buf = Buf::default();
    let ev = Events::to_writer(Mode::Quiet, Box::new(buf.clone()));
    ev.emit(Event::HandlerOutput {
        peer,
        fingerprint: Some(fp),
        line: "working".into(),
    });
    let done = |ok| Event::Handler {
        peer: Some(peer),
        status: if ok { "exit:0" } else { "exit:3" }.into(),
        ok,
        message: "the receiver's handler exited with status 3".into(),
        reply_bytes: 2,
    };
    ev.emit(done(true));
    ev.emit(done(false));
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let short = &fp.to_string()[..16];
    assert_eq!(
        text,
        format!(
            "[handler 127.0.0.1:5555 SHA256:{short}…] working\n\
             pincat: error: 127.0.0.1:5555: the receiver's handler exited with status 3\n"
        )
    );
    let v = done(false).to_json();
    assert_eq!(v["event"], "error");
    assert_eq!(v["code"], "handler");
    assert_eq!(v["handler_status"], "exit:3");
    let v = done(true).to_json();
    assert_eq!(v["event"], "handler");
    assert_eq!(v["reply_bytes"], 2);
}

#[test]
fn a_started_transfer_says_which_way_it_goes() {
    let peer: SocketAddr = "192.0.2.7:7878".parse().unwrap();
    let started = |giving, kind, bytes| Event::TransferStarted {
        peer,
        giving,
        kind,
        names: vec![],
        files: 3,
        bytes,
        skipped: vec![],
    };
    let line = |e: Event| e.to_human().unwrap();
    assert_eq!(
        line(started(true, Kind::Files, Some(2048))),
        "pincat: sending 3 file(s), 2.0 KiB to 192.0.2.7:7878"
    );
    assert_eq!(
        line(started(false, Kind::Files, Some(2048))),
        "pincat: receiving 3 file(s), 2.0 KiB from 192.0.2.7:7878"
    );
    assert_eq!(
        line(started(false, Kind::Raw, None)),
        "pincat: receiving raw data from 192.0.2.7:7878"
    );
    assert_eq!(
        line(started(true, Kind::Stream, None)),
        "pincat: sending a stream to 192.0.2.7:7878"
    );
    // JSON is as it was: the verb says the direction.
    let v = started(true, Kind::Stream, None).to_json();
    assert!(v.get("giving").is_none(), "{v}");
    // An error about one peer names it once.
    let e = Event::Error {
        peer: Some(peer),
        code: "incomplete",
        message: format!("the taker at {peer}: it went away"),
    };
    assert_eq!(
        line(e),
        "pincat: error: the taker at 192.0.2.7:7878: it went away"
    );
}
