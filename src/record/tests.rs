//! The record layer against a real rustls peer (unbuffered API, in memory).

use super::memory::{Peer, Stop};
use super::*;
use crate::identity::Identity;
use crate::session::Handshaking;
use crate::verify::{self, Presented};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;

/// Our side (the client, taken over by [`Tls`]) and a rustls server peer,
/// after their handshake.
fn pair_with_limit(limit: u64) -> (Tls, Peer<UnbufferedServerConnection>) {
    let id = Identity::generate().unwrap();
    let sc = verify::server_config(&id, None, Presented::default()).unwrap();
    let cc = verify::client_config(Some(id.fingerprint()), None, Presented::default()).unwrap();
    let name = ServerName::try_from(verify::SERVER_NAME).unwrap();
    let mut c = Peer::new(UnbufferedClientConnection::new(cc, name).unwrap());
    let mut s = Peer::new(UnbufferedServerConnection::new(sc).unwrap());
    super::memory::handshake(&mut c, &mut s).unwrap();
    let (secrets, schedule) = c.conn.into_kernel().unwrap();
    (Tls::new(secrets, schedule, limit).unwrap(), s)
}

fn pair() -> (Tls, Peer<UnbufferedServerConnection>) {
    pair_with_limit(1 << 24)
}

/// Seals `data` as our records, appended to `wire`.
fn seal_records(tls: &mut Tls, data: &[u8], wire: &mut Vec<u8>) {
    let mut plain = data.to_vec();
    for chunk in plain.chunks_mut(MAX_PLAIN) {
        tls.prepare(1, wire).unwrap();
        let (h, t) = tls.seal(chunk).unwrap();
        wire.extend_from_slice(&h);
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(&t);
    }
}

/// Opens every record in `wire`: the data, and how it ended.
fn open_records(tls: &mut Tls, wire: &mut [u8]) -> (Vec<u8>, Result<(), Fatal>) {
    let mut data = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let n = match record_len(&wire[at..]) {
            Ok(Some(n)) => n,
            Ok(None) => panic!("a partial record"),
            Err(f) => return (data, Err(f)),
        };
        match tls.open(&mut wire[at..at + n]) {
            Ok(Inbound::Data(len)) => data.extend_from_slice(&wire[at + HEADER..at + HEADER + len]),
            Ok(_) => {}
            Err(f) => return (data, Err(f)),
        }
        at += n;
    }
    (data, Ok(()))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn records_round_trip_with_rustls_both_ways() {
    let (mut tls, mut peer) = pair();
    let data = pattern(3 * MAX_PLAIN + 123);
    seal_records(&mut tls, &data, &mut peer.inbox);
    peer.pump().unwrap();
    assert_eq!(peer.got, data, "rustls read what we sealed");

    peer.send(&data).unwrap();
    let mut wire = std::mem::take(&mut peer.out);
    let (got, end) = open_records(&mut tls, &mut wire);
    end.unwrap();
    assert_eq!(got, data, "we opened what rustls sealed");
}

#[test]
fn a_tampered_record_is_rejected_and_releases_nothing() {
    let (mut tls, mut peer) = pair();
    peer.send(b"secret payload").unwrap();
    let mut wire = std::mem::take(&mut peer.out);
    let last = wire.len() - 1;
    wire[HEADER + 3] ^= 1;
    wire[last] ^= 0;
    let (got, end) = open_records(&mut tls, &mut wire);
    assert!(got.is_empty());
    let f = end.unwrap_err();
    assert_eq!(f.alert, Some(AlertDescription::BadRecordMac));
    assert_eq!(f.error, Error::DecryptError);

    // A changed header (the AAD) fails the same way.
    let (mut tls, mut peer) = pair();
    peer.send(b"secret payload").unwrap();
    let mut wire = std::mem::take(&mut peer.out);
    wire[1] = 1;
    let (got, end) = open_records(&mut tls, &mut wire);
    assert!(got.is_empty());
    assert_eq!(end.unwrap_err().alert, Some(AlertDescription::BadRecordMac));
}

#[test]
fn oversize_and_unprotected_records_are_refused_from_their_header() {
    let big = (MAX_CIPHER as u16 + 1).to_be_bytes();
    let f = record_len(&[23, 3, 3, big[0], big[1]]).unwrap_err();
    assert_eq!(f.alert, Some(AlertDescription::RecordOverflow));
    let max = (MAX_CIPHER as u16).to_be_bytes();
    assert_eq!(
        record_len(&[23, 3, 3, max[0], max[1]]).unwrap(),
        Some(MAX_RECORD)
    );
    for typ in [20, 21, 22, 24, 0] {
        let f = record_len(&[typ, 3, 3, 0, 20]).unwrap_err();
        assert_eq!(f.alert, Some(AlertDescription::UnexpectedMessage), "{typ}");
    }
    assert_eq!(record_len(&[23, 3, 3, 0]).unwrap(), None);
}

#[test]
fn close_notify_ends_each_direction() {
    let (mut tls, mut peer) = pair();
    peer.send(b"last words").unwrap();
    peer.pump_with(|mut w, out| {
        let at = out.len();
        out.resize(at + 64, 0);
        let n = w.queue_close_notify(&mut out[at..]).unwrap();
        out.truncate(at + n);
    })
    .unwrap();
    let mut wire = std::mem::take(&mut peer.out);
    let (got, end) = open_records(&mut tls, &mut wire);
    end.unwrap();
    assert_eq!(got, b"last words");
    assert!(tls.peer_closed());

    let mut wire = Vec::new();
    seal_records(&mut tls, b"ours", &mut wire);
    tls.alert(AlertDescription::CloseNotify, &mut wire).unwrap();
    peer.inbox = wire;
    peer.pump().unwrap();
    assert_eq!(peer.got, b"ours");
    assert!(peer.peer_closed, "rustls saw our close_notify");
}

#[test]
fn fatal_alerts_end_the_session_both_ways() {
    // Ours, as rustls hears it.
    let (mut tls, mut peer) = pair();
    let mut wire = Vec::new();
    tls.alert(AlertDescription::AccessDenied, &mut wire)
        .unwrap();
    peer.inbox = wire;
    assert_eq!(
        peer.pump().unwrap_err(),
        Error::AlertReceived(AlertDescription::AccessDenied)
    );
    // The peer's, as we hear it: its error, and no alert back.
    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    a.alert(AlertDescription::CertificateRequired, &mut wire)
        .unwrap();
    let (_, end) = open_records(&mut b, &mut wire);
    let f = end.unwrap_err();
    assert_eq!(f.alert, None);
    assert_eq!(
        f.error,
        Error::AlertReceived(AlertDescription::CertificateRequired)
    );
    // A record from another connection's keys is refused.
    let (mut other, _) = both();
    let mut wire = Vec::new();
    other
        .alert(AlertDescription::CloseNotify, &mut wire)
        .unwrap();
    let (_, end) = open_records(&mut b, &mut wire);
    assert_eq!(end.unwrap_err().alert, Some(AlertDescription::BadRecordMac));
}

#[test]
fn a_key_update_from_rustls_is_followed_and_answered() {
    let (mut tls, mut peer) = pair();
    peer.pump_with(|w, _| w.refresh_traffic_keys().unwrap())
        .unwrap();
    peer.send(b"under the new key").unwrap();
    let mut wire = std::mem::take(&mut peer.out);
    let (got, end) = open_records(&mut tls, &mut wire);
    end.unwrap();
    assert_eq!(got, b"under the new key");

    // rustls asked for an update back: it goes out before our next record.
    let mut wire = Vec::new();
    seal_records(&mut tls, b"answer", &mut wire);
    assert!(wire.len() > HEADER + 6 + TAIL, "a KeyUpdate came first");
    peer.inbox = wire;
    peer.pump().unwrap();
    assert_eq!(peer.got, b"answer");
}

#[test]
fn our_key_is_replaced_before_its_limit() {
    let (mut tls, mut peer) = pair_with_limit(2);
    let data = pattern(7 * MAX_PLAIN);
    let mut wire = Vec::new();
    seal_records(&mut tls, &data, &mut wire);
    // 7 data records and a KeyUpdate every 2.
    let mut records = 0;
    let mut at = 0;
    while at < wire.len() {
        at += record_len(&wire[at..]).unwrap().unwrap();
        records += 1;
    }
    assert_eq!(records, 7 + 3);
    peer.inbox = wire;
    peer.pump().unwrap();
    assert_eq!(peer.got, data);
}

/// Both sides taken over by [`Tls`].
fn both() -> (Tls, Tls) {
    let (ours, peer) = pair();
    let (secrets, schedule) = peer.conn.into_kernel().unwrap();
    (ours, Tls::new(secrets, schedule, 1 << 24).unwrap())
}

#[test]
fn a_flood_of_empty_records_is_cut_off() {
    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    for _ in 0..=MAX_IDLE_RECORDS {
        let (h, t) = a.seal(&mut []).unwrap();
        wire.extend_from_slice(&h);
        wire.extend_from_slice(&t);
    }
    let (got, end) = open_records(&mut b, &mut wire);
    assert!(got.is_empty());
    assert!(
        end.is_err(),
        "{} empty records were accepted",
        MAX_IDLE_RECORDS
    );

    // Data in between keeps the count down.
    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    for _ in 0..3 * MAX_IDLE_RECORDS {
        let (h, t) = a.seal(&mut []).unwrap();
        wire.extend_from_slice(&h);
        wire.extend_from_slice(&t);
        seal_records(&mut a, b"x", &mut wire);
    }
    let (got, end) = open_records(&mut b, &mut wire);
    end.unwrap();
    assert_eq!(got.len(), 3 * MAX_IDLE_RECORDS as usize);
    let _ = Stop::Blocked;
}

#[test]
fn handshake_messages_after_the_handshake_are_refused() {
    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    // A ClientHello (type 1), however well protected, is not welcome now.
    a.seal_into(HANDSHAKE, &[1, 0, 0, 0], &mut wire).unwrap();
    let (_, end) = open_records(&mut b, &mut wire);
    assert_eq!(
        end.unwrap_err().alert,
        Some(AlertDescription::UnexpectedMessage)
    );

    // A KeyUpdate split over two records follows in the second one; data
    // between the pieces is refused.
    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    a.seal_into(HANDSHAKE, &[KEY_UPDATE, 0], &mut wire).unwrap();
    a.seal_into(HANDSHAKE, &[0, 1, 0], &mut wire).unwrap();
    a.tx = Keys::new(a.schedule.update_tx().unwrap(), 0).unwrap();
    seal_records(&mut a, b"after", &mut wire);
    let (got, end) = open_records(&mut b, &mut wire);
    end.unwrap();
    assert_eq!(got, b"after");

    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    a.seal_into(HANDSHAKE, &[KEY_UPDATE, 0], &mut wire).unwrap();
    seal_records(&mut a, b"between", &mut wire);
    let (got, end) = open_records(&mut b, &mut wire);
    assert!(got.is_empty());
    assert_eq!(
        end.unwrap_err().alert,
        Some(AlertDescription::UnexpectedMessage)
    );
}

#[test]
fn a_server_refuses_a_session_ticket() {
    let (mut a, mut b) = both();
    let mut wire = Vec::new();
    a.seal_into(HANDSHAKE, &[NEW_SESSION_TICKET, 0, 0, 1, 0], &mut wire)
        .unwrap();
    let (_, end) = open_records(&mut b, &mut wire);
    assert!(end.is_err());
}

/// Seals an arbitrary TLSInnerPlaintext (content, type, padding) as one
/// record, as a peer that ignores the size rules could.
fn seal_inner(tls: &mut Tls, inner: &[u8]) -> Vec<u8> {
    let hdr = header(inner.len() + TAG);
    let mut buf = inner.to_vec();
    let nonce = tls.tx.next_nonce().unwrap();
    tls.tx
        .key
        .seal_in_place_append_tag(nonce, Aad::from(hdr), &mut buf)
        .unwrap();
    [&hdr[..], &buf].concat()
}

#[test]
fn padding_past_the_inner_plaintext_limit_is_refused() {
    // 2^14 bytes of content, its type and no padding: the largest record.
    let (mut a, mut b) = both();
    let mut inner = vec![7u8; MAX_PLAIN];
    inner.push(APPLICATION_DATA);
    let mut wire = seal_inner(&mut a, &inner);
    assert_eq!(b.open(&mut wire).unwrap(), Inbound::Data(MAX_PLAIN));
    // The same content with padding behind it: over 2^14 + 1 in all.
    inner.extend_from_slice(&[0; 200]);
    let mut wire = seal_inner(&mut a, &inner);
    let err = b.open(&mut wire).unwrap_err();
    assert_eq!(err.alert, Some(AlertDescription::RecordOverflow));
}

/// The peer's Finished, application data and a KeyUpdate asking for ours,
/// all in one write: the session's handshake must leave everything behind
/// the Finished to the record layer, which answers the KeyUpdate before
/// its first record (rustls would have answered and lost it at the
/// hand-over).
#[test]
fn a_key_update_right_behind_the_finished_is_answered_after_the_hand_over() {
    use crate::session::Session;
    use std::io::{Read, Write};
    use std::time::Duration;
    let id = Identity::generate().unwrap();
    let sc = verify::server_config(&id, None, Presented::default()).unwrap();
    let cc = verify::client_config(Some(id.fingerprint()), None, Presented::default()).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (t, _) = l.accept().unwrap();
        let conn = UnbufferedServerConnection::new(sc).unwrap();
        let mut s = Session::handshake(conn, t, Duration::from_secs(5)).unwrap();
        let mut hi = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            got += s.read(&mut hi[got..]).unwrap();
        }
        s.write_all(b"reply").unwrap();
        hi
    });
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from(verify::SERVER_NAME).unwrap();
    let mut c = Peer::new(UnbufferedClientConnection::new(cc, name).unwrap());
    c.pump().unwrap();
    tcp.write_all(&std::mem::take(&mut c.out)).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while c.pump().unwrap() != Stop::Traffic {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed during the handshake");
        c.inbox.extend_from_slice(&buf[..n]);
    }
    // Our Finished, "hi", then KeyUpdate(update_requested), in one write.
    let Peer { conn, mut out, .. } = c;
    let (secrets, schedule) = conn.into_kernel().unwrap();
    let mut client = Tls::new(secrets, schedule, 1 << 24).unwrap();
    seal_records(&mut client, b"hi", &mut out);
    client
        .seal_into(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 1], &mut out)
        .unwrap();
    client.tx = Keys::new(client.schedule.update_tx().unwrap(), 0).unwrap();
    tcp.write_all(&out).unwrap();
    assert_eq!(&server.join().unwrap(), b"hi");
    // The server's KeyUpdate, then "reply" under its new key.
    let (mut wire, mut at, mut plain) = (Vec::new(), 0, Vec::new());
    while plain.len() < 5 {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed before its reply");
        wire.extend_from_slice(&buf[..n]);
        while let Some(len) = record_len(&wire[at..]).unwrap() {
            if at + len > wire.len() {
                break;
            }
            let opened = client.open(&mut wire[at..at + len]);
            let opened = opened.expect("the server's records open after its KeyUpdate");
            if let Inbound::Data(k) = opened {
                plain.extend_from_slice(&wire[at + HEADER..at + HEADER + k]);
            }
            at += len;
        }
    }
    assert_eq!(plain, b"reply");
}
