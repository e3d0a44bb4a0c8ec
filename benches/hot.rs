//! In-process hot paths: the pinned handshake, frame encode/decode, and bulk
//! encryption/decryption through rustls as pincat configures it (buffered
//! and unbuffered APIs) and through pincat's own record layer.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pincat::protocol::{self, Entry, FrameType, Offer, TransferKind};
use pincat::record;
use pincat::verify::{self, Presented, memory};
use pincat::{Fingerprint, Identity};
use rustls::{ClientConnection, ServerConnection};
use std::hint::black_box;

/// A client and server of pincat's own configurations, after their
/// in-memory handshake (the same pump the unit tests use).
fn pair(server_id: &Identity) -> (ClientConnection, ServerConnection) {
    let sc = verify::server_config(server_id, None, Presented::default()).unwrap();
    let cc =
        verify::client_config(Some(server_id.fingerprint()), None, Presented::default()).unwrap();
    let p = memory::Pair::new(cc, sc).unwrap();
    assert!(p.client_result.is_ok() && p.server_result.is_ok());
    (p.client, p.server)
}

fn bench_handshake(cr: &mut Criterion) {
    let id = Identity::generate().unwrap();
    cr.bench_function("handshake with pin check (in memory)", |b| {
        b.iter(|| {
            let (_, s) = pair(&id);
            black_box(s.peer_certificates().is_some());
        })
    });
    cr.bench_function("identity generate (P-256 + self-signed cert)", |b| {
        b.iter(|| black_box(Identity::generate().unwrap().fingerprint()))
    });
}

fn bench_frames(cr: &mut Criterion) {
    let offer = Offer {
        kind: TransferKind::Files,
        entries: (0..1000)
            .map(|i| Entry {
                name: format!("dir/sub/file-{i:04}.dat"),
                is_dir: false,
                mode: 0o644,
                size: i * 1000,
                mtime: None,
                link: None,
            })
            .collect(),
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    };
    let enc = offer.encode();
    cr.bench_function("offer encode, 1000 files", |b| {
        b.iter(|| black_box(offer.encode()))
    });
    cr.bench_function("offer decode+validate, 1000 files", |b| {
        b.iter(|| black_box(Offer::decode(black_box(&enc)).unwrap()))
    });
    cr.bench_function("data header encode+decode", |b| {
        b.iter(|| {
            let h = protocol::encode_header(FrameType::Data, black_box(262_144));
            black_box(protocol::decode_header(&h).unwrap())
        })
    });
    let fp = Identity::generate().unwrap().fingerprint().to_openssl();
    cr.bench_function("fingerprint parse (openssl form)", |b| {
        b.iter(|| black_box(black_box(&fp).parse::<Fingerprint>().unwrap()))
    });
}

fn bench_bulk(cr: &mut Criterion) {
    use std::io::{Read, Write};
    let id = Identity::generate().unwrap();
    let (mut c, _s) = pair(&id);
    c.set_buffer_limit(Some(4 << 20));
    let chunk = vec![0x5au8; 256 * 1024];
    let mut wire = Vec::with_capacity(300 * 1024);
    let mut g = cr.benchmark_group("bulk");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("encrypt 256 KiB (client writer + write_tls)", |b| {
        b.iter(|| {
            c.writer().write_all(&chunk).unwrap();
            wire.clear();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            black_box(wire.len());
        })
    });
    let mut out = vec![0u8; chunk.len()];
    let (mut c2, mut s2) = pair(&id);
    c2.set_buffer_limit(Some(4 << 20));
    g.bench_function("encrypt + decrypt 256 KiB round trip", |b| {
        b.iter(|| {
            c2.writer().write_all(&chunk).unwrap();
            wire.clear();
            while c2.wants_write() {
                c2.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            let mut got = 0;
            while !rd.is_empty() {
                s2.read_tls(&mut rd).unwrap();
                s2.process_new_packets().unwrap();
                while let Ok(n) = s2.reader().read(&mut out[got..]) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
            assert_eq!(got, out.len());
            black_box(&out);
        })
    });
    bench_in_place(&mut g, &id, &chunk, &mut wire);
    bench_unbuffered(&mut g, &id, &chunk, &mut wire);
    g.finish();
}

/// The same round trip through pincat's record layer: sealed and opened
/// in place.
fn bench_in_place(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &Identity,
    chunk: &[u8],
    wire: &mut Vec<u8>,
) {
    let sc = verify::server_config(id, None, Presented::default()).unwrap();
    let cc = verify::client_config(Some(id.fingerprint()), None, Presented::default()).unwrap();
    let (mut tx, mut rx) = pincat::record::memory::pair(cc, sc).unwrap();
    let mut plain = vec![0u8; chunk.len()];
    g.bench_function(
        "in place: seal + open 256 KiB round trip (pincat record layer)",
        |b| {
            b.iter(|| {
                // The sender's file read, then sealing where the data landed;
                // `wire` stands for the socket (as `write_tls` into a Vec above).
                plain.copy_from_slice(chunk);
                wire.clear();
                for rec in plain.chunks_mut(record::MAX_PLAIN) {
                    let (h, t) = tx.seal(rec).unwrap();
                    wire.extend_from_slice(&h);
                    wire.extend_from_slice(rec);
                    wire.extend_from_slice(&t);
                }
                // The receiver opens each record where it landed; its plaintext
                // would be written to disk from there.
                let mut at = 0;
                let mut got = 0;
                while at < wire.len() {
                    let n = record::record_len(&wire[at..]).unwrap().unwrap();
                    if let record::Inbound::Data(len) = rx.open(&mut wire[at..at + n]).unwrap() {
                        black_box(&wire[at + record::HEADER..at + record::HEADER + len]);
                        got += len;
                    }
                    at += n;
                }
                assert_eq!(got, chunk.len());
            })
        },
    );
}

/// The same round trip through rustls's unbuffered API, as a session would
/// run it without pincat's record layer: encrypted into a wire buffer, and
/// each record's plaintext (which rustls 0.23 hands out in a buffer of its
/// own) copied to where the receiver writes from. BENCHMARKS.md, "Record
/// layer", has why pincat keeps its own.
fn bench_unbuffered(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &Identity,
    chunk: &[u8],
    wire: &mut Vec<u8>,
) {
    use rustls::client::UnbufferedClientConnection;
    use rustls::server::UnbufferedServerConnection;
    use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
    let sc = verify::server_config(id, None, Presented::default()).unwrap();
    let cc = verify::client_config(Some(id.fingerprint()), None, Presented::default()).unwrap();
    let name = rustls::pki_types::ServerName::try_from(verify::SERVER_NAME).unwrap();
    let mut c = record::memory::Peer::new(UnbufferedClientConnection::new(cc, name).unwrap());
    let mut s = record::memory::Peer::new(UnbufferedServerConnection::new(sc).unwrap());
    record::memory::handshake(&mut c, &mut s).unwrap();
    let (mut tx, mut rx) = (c.conn, s.conn);
    let mut plain = vec![0u8; chunk.len()];
    let mut got_plain = Vec::with_capacity(chunk.len());
    wire.resize(chunk.len() + 64 * 1024, 0);
    g.bench_function(
        "unbuffered: encrypt + decrypt 256 KiB round trip (rustls unbuffered API)",
        |b| {
            b.iter(|| {
                plain.copy_from_slice(chunk);
                let n = match tx.process_tls_records(&mut []).state.unwrap() {
                    ConnectionState::WriteTraffic(mut w) => w.encrypt(&plain, wire).unwrap(),
                    s => panic!("{s:?}"),
                };
                got_plain.clear();
                let mut at = 0;
                while at < n {
                    let UnbufferedStatus { discard, state } =
                        rx.process_tls_records(&mut wire[at..n]);
                    match state.unwrap() {
                        ConnectionState::ReadTraffic(mut r) => {
                            while let Some(rec) = r.next_record() {
                                got_plain.extend_from_slice(rec.unwrap().payload);
                            }
                        }
                        s => panic!("{s:?}"),
                    }
                    at += discard;
                }
                assert_eq!(got_plain.len(), chunk.len());
                black_box(&got_plain);
            })
        },
    );
}

criterion_group!(benches, bench_handshake, bench_frames, bench_bulk);
criterion_main!(benches);
