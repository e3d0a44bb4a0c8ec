//! The data path on rustls's own unbuffered connection, kept after the
//! handshake instead of [`crate::record`]: records are encrypted into the
//! session's wire buffer and decrypted by rustls (which hands each record's
//! plaintext out in a buffer of its own).

use rustls::Error;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

use super::Handshaking;

/// What one call into rustls on received bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// Application data: this many bytes appended to the plaintext.
    Data(usize),
    /// rustls needs more bytes.
    More,
    /// The peer's close_notify.
    Closed,
}

/// A rustls unbuffered connection after its handshake, either side.
pub(crate) trait Traffic: Send {
    /// Processes `incoming` until one record's plaintext (appended to
    /// `plain`), the peer's close, or the need for more; returns the bytes
    /// consumed from the front of `incoming`.
    fn read(&mut self, incoming: &mut [u8], plain: &mut Vec<u8>) -> Result<(usize, Got), Error>;
    /// Appends `data` as application-data records to `out`, behind anything
    /// rustls owes first (a KeyUpdate).
    fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error>;
    /// Appends our close_notify to `out`.
    fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error>;
    /// After a failure: appends the alert rustls queued, if any.
    fn queued_alert(&mut self, out: &mut Vec<u8>);
}

/// A rustls connection and the records it produced while reading (a
/// KeyUpdate answer) that must precede our next record.
pub(crate) struct Unbuffered<H> {
    conn: H,
    owed: Vec<u8>,
}

impl<H: Handshaking> Unbuffered<H> {
    pub(crate) fn new(conn: H) -> Self {
        Unbuffered {
            conn,
            owed: Vec::new(),
        }
    }

    /// Runs rustls with no input until it lets us write, collecting what it
    /// queued into `self.owed`; then `then` gets the write state.
    fn write_with<T>(
        &mut self,
        then: impl FnOnce(WriteTraffic<'_, H::Data>, &mut Vec<u8>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut then = Some(then);
        loop {
            let UnbufferedStatus { state, .. } = self.conn.process(&mut []);
            match state? {
                ConnectionState::EncodeTlsData(mut e) => encode(&mut e, &mut self.owed)?,
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::WriteTraffic(w) => match then.take() {
                    Some(f) => return f(w, &mut self.owed),
                    None => unreachable!(),
                },
                // Edge-triggered: the read path has seen it already.
                ConnectionState::PeerClosed => {}
                s => return Err(Error::General(format!("cannot write in TLS state {s:?}"))),
            }
        }
    }
}

fn encode<D>(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, D>,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let at = out.len();
    out.resize(at + 4096, 0);
    let r = match e.encode(&mut out[at..]) {
        Err(EncodeError::InsufficientSize(s)) if s.required_size <= 1 << 20 => {
            out.resize(at + s.required_size, 0);
            e.encode(&mut out[at..])
        }
        r => r,
    };
    match r {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(err) => {
            out.truncate(at);
            Err(Error::General(err.to_string()))
        }
    }
}

/// Runs `f` into the end of `out` with room for `room` bytes, growing once
/// if rustls asks for more.
fn into_tail(
    out: &mut Vec<u8>,
    room: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), Error> {
    let at = out.len();
    out.resize(at + room, 0);
    let r = match f(&mut out[at..]) {
        Err(EncryptError::InsufficientSize(s)) => {
            out.resize(at + s.required_size, 0);
            f(&mut out[at..])
        }
        r => r,
    };
    match r {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(at);
            Err(Error::EncryptError)
        }
    }
}

impl<H: Handshaking> Traffic for Unbuffered<H> {
    fn read(&mut self, incoming: &mut [u8], plain: &mut Vec<u8>) -> Result<(usize, Got), Error> {
        let mut used = 0;
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut incoming[used..]);
            let got = match state? {
                ConnectionState::ReadTraffic(mut r) => {
                    let mut n = 0;
                    while let Some(rec) = r.next_record() {
                        let rec = rec?;
                        plain.extend_from_slice(rec.payload);
                        n += rec.payload.len();
                    }
                    Some(Got::Data(n))
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => Some(Got::Closed),
                // A KeyUpdate answer: it goes out before our next record.
                ConnectionState::EncodeTlsData(mut e) => {
                    encode(&mut e, &mut self.owed)?;
                    None
                }
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::WriteTraffic(_) => Some(Got::More),
                s => return Err(Error::General(format!("unexpected TLS state {s:?}"))),
            };
            used += discard;
            if let Some(g) = got {
                return Ok((used, g));
            }
        }
    }

    fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.write_with(|mut w, owed| {
            out.append(owed);
            let room = data.len() + data.len().div_ceil(1 << 14) * 22;
            into_tail(out, room, |buf| w.encrypt(data, buf))
        })
    }

    fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.write_with(|mut w, owed| {
            out.append(owed);
            into_tail(out, 64, |buf| w.queue_close_notify(buf))
        })
    }

    fn queued_alert(&mut self, out: &mut Vec<u8>) {
        for _ in 0..8 {
            if !self.conn.state().wants_write() {
                break;
            }
            let UnbufferedStatus { state, .. } = self.conn.process(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    if encode(&mut e, out).is_err() {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => break,
            }
        }
    }
}
