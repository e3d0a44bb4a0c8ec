use std::thread;

use super::*;
use crate::session::tests::connected;

const LIMIT: Duration = Duration::from_secs(5);

fn ends() -> Ends {
    Ends {
        listener: Fingerprint::from_bytes([7; 32]),
        dialer: None,
    }
}

fn code(s: &str) -> Code {
    Code::parse(s).unwrap()
}

/// Runs a dialer with `dial` against a listener gated by `gate`.
fn run(
    dial: &str,
    gate: &Gate,
    dial_ends: Ends,
) -> (Result<(), DialFailure>, Result<(), AdmitFailure>) {
    let (mut c, mut s) = connected();
    let g = gate.clone();
    let h = thread::spawn(move || {
        let r = admit(&mut s, &g, &ends(), LIMIT).map(drop);
        s.close();
        r
    });
    let d = prove(&mut c, &code(dial), &dial_ends, LIMIT);
    drop(c);
    (d, h.join().unwrap())
}

#[test]
fn the_same_code_confirms_both_ends() {
    let gate = Gate::new(code("acid acorn acre"), GatePolicy::OneShot(3));
    let (d, l) = run("ACID-acorn  acre", &gate, ends());
    assert!(d.is_ok() && l.is_ok(), "{d:?} {l:?}");
    assert_eq!(gate.failures(), 0);
}

#[test]
fn a_wrong_code_fails_both_ends_and_counts() {
    let gate = Gate::new(code("acid-acorn-acre"), GatePolicy::KeepOpen(5));
    let (d, l) = run("acid-acorn-aged", &gate, ends());
    assert!(matches!(d, Err(DialFailure::NotConfirmed)), "{d:?}");
    assert!(
        matches!(l, Err(AdmitFailure::WrongCode | AdmitFailure::Broken(_))),
        "{l:?}"
    );
    assert_eq!(gate.failures(), 1);
}

#[test]
fn the_confirmation_covers_the_certificates() {
    let gate = Gate::new(code("acid-acorn-acre"), GatePolicy::KeepOpen(5));
    let other = Ends {
        listener: Fingerprint::from_bytes([8; 32]),
        dialer: None,
    };
    let (d, _) = run("acid-acorn-acre", &gate, other);
    assert!(matches!(d, Err(DialFailure::NotConfirmed)), "{d:?}");
    assert_eq!(gate.failures(), 1);
}

/// A man in the middle who relays the exchange between two TLS sessions
/// (knowing no code) fails: the two sessions' exporters differ.
#[test]
fn a_relayed_exchange_between_two_sessions_fails() {
    let gate = Gate::new(code("acid-acorn-acre"), GatePolicy::KeepOpen(5));
    let (mut dialer, mut mitm_in) = connected();
    let (mut mitm_out, mut listener) = connected();
    let g = gate.clone();
    let l = thread::spawn(move || admit(&mut listener, &g, &ends(), LIMIT));
    let relay = thread::spawn(move || {
        let mut hello = [0u8; HELLO];
        mitm_in.read_exact(&mut hello)?;
        mitm_out.write_all(&hello)?;
        let mut reply = [0u8; REPLY];
        mitm_out.read_exact(&mut reply)?;
        mitm_in.write_all(&reply)?;
        let mut confirm = [0u8; MAC];
        let r = mitm_in.read_exact(&mut confirm);
        mitm_out.close();
        r
    });
    let d = prove(&mut dialer, &code("acid-acorn-acre"), &ends(), LIMIT);
    drop(dialer);
    assert!(matches!(d, Err(DialFailure::NotConfirmed)), "{d:?}");
    assert!(l.join().unwrap().is_err());
    let _ = relay.join().unwrap();
    assert_eq!(gate.failures(), 1);
}

#[test]
fn a_dialer_that_aborts_after_the_share_uses_an_attempt() {
    let gate = Gate::new(code("acid-acorn-acre"), GatePolicy::OneShot(3));
    let (mut c, mut s) = connected();
    let g = gate.clone();
    let h = thread::spawn(move || admit(&mut s, &g, &ends(), LIMIT));
    let mut hello = MAGIC.to_vec();
    let (_, a) = Spake2::<Ed25519Group>::start_a(
        &password(&code("x y z")),
        &ids(&[0; 32]).0,
        &ids(&[0; 32]).1,
    );
    hello.extend_from_slice(&a);
    c.write_all(&hello).unwrap();
    let mut reply = [0u8; REPLY];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(reply[MAGIC.len()], GO);
    drop(c);
    assert!(matches!(h.join().unwrap(), Err(AdmitFailure::Broken(_))));
    assert_eq!(gate.failures(), 1);
}

#[test]
fn a_preamble_instead_of_the_exchange_is_told_apart_and_not_counted() {
    let gate = Gate::new(code("acid-acorn-acre"), GatePolicy::OneShot(3));
    let (mut c, mut s) = connected();
    let g = gate.clone();
    let h = thread::spawn(move || admit(&mut s, &g, &ends(), LIMIT));
    c.write_all(&crate::protocol::preamble()).unwrap();
    assert!(matches!(h.join().unwrap(), Err(AdmitFailure::NoCode)));
    assert_eq!(gate.failures(), 0);
}

#[test]
fn generated_codes_parse_back_and_are_strong_enough() {
    assert_eq!(words().count(), WORDS);
    let c = Code::generate(DEFAULT_WORDS).unwrap();
    assert_eq!(
        Code::parse(&c.to_string().to_uppercase().replace('-', " ")).unwrap(),
        c
    );
    assert!(c.list_bits() >= 30.0, "{}", c.list_bits());
    assert_ne!(Code::generate(DEFAULT_WORDS).unwrap(), c);
    assert_eq!(format!("{c:?}"), "Code(..)");
    assert!(Code::parse(" - ").is_err());
    assert!(Code::parse("acid\u{202e}acorn").is_err());
}
