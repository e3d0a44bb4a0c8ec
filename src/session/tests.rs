//! Unit tests of sessions over loopback, and the connected pair other
//! modules' tests start from.

use super::recv_buffer::MAX_READY;
use super::*;
use crate::identity::Identity;
use crate::verify::{self, Presented};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use std::net::TcpListener;

/// A client and a server session over loopback.
pub(crate) fn connected() -> (Session, Session) {
    let id = Identity::generate().unwrap();
    let sc = verify::server_config(&id, None, Presented::default()).unwrap();
    let cc = verify::client_config(Some(id.fingerprint()), None, Presented::default()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (t, _) = l.accept().unwrap();
        let conn = UnbufferedServerConnection::new(sc).unwrap();
        Session::handshake(conn, t, Duration::from_secs(5)).unwrap()
    });
    let t = TcpStream::connect(addr).unwrap();
    let name = ServerName::try_from(verify::SERVER_NAME).unwrap();
    let conn = UnbufferedClientConnection::new(cc, name).unwrap();
    let c = Session::handshake(conn, t, Duration::from_secs(5)).unwrap();
    (c, h.join().unwrap())
}

#[test]
fn both_ends_queue_at_most_one_frame_unsent() {
    let (c, s) = connected();
    for end in [&c, &s] {
        let lowat = sys::notsent_lowat(end.sock.tcp.as_fd()).unwrap();
        assert_eq!(lowat as usize, UNSENT_MAX);
    }
}

#[test]
fn a_flood_of_tiny_records_keeps_bookkeeping_bounded() {
    let (mut c, mut s) = connected();
    // 20,000 one-byte DATA frames, each byte in a record of its own.
    let frames = 20_000;
    let mut plain = Vec::new();
    for i in 0..frames {
        plain.extend_from_slice(&protocol::encode_header(FrameType::Data, 1));
        plain.push(i as u8);
    }
    let mut wire = Vec::new();
    for b in &plain {
        let mut one = [*b];
        let (h, t) = c.tls.seal(&mut one).unwrap();
        wire.extend_from_slice(&h);
        wire.extend_from_slice(&one);
        wire.extend_from_slice(&t);
    }
    let writer = std::thread::spawn(move || {
        c.sock.tcp.write_all(&wire).unwrap();
        c
    });
    let mut got = Vec::new();
    for _ in 0..frames {
        let (t, len) = s.read_header().unwrap();
        assert_eq!((t, len), (FrameType::Data, 1));
        s.read_data::<()>(len, &mut |io| {
            io.iter().for_each(|b| got.extend_from_slice(b));
            Ok(())
        })
        .ok()
        .unwrap();
        assert!(s.rx.ready.len() <= MAX_READY, "{}", s.rx.ready.len());
        assert_eq!(s.rx.pending, s.rx.ready.iter().map(|r| r.1).sum::<usize>());
    }
    let want: Vec<u8> = (0..frames).map(|i| i as u8).collect();
    assert_eq!(got, want);
    drop(writer.join().unwrap());
}
