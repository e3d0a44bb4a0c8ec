//! pincat's own TLS 1.3 record layer, used once rustls has finished the
//! handshake: records sealed and opened in place in the caller's buffers,
//! alerts, KeyUpdate and post-handshake messages (RFC 8446 sections 4.6
//! and 5). rustls keeps the key schedule (a [`rustls::kernel`] connection).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ConnectionTrafficSecrets, Error, PeerMisbehaved};

/// Most plaintext one record carries.
pub const MAX_PLAIN: usize = 1 << 14;
/// A record header: type, legacy version, length.
pub const HEADER: usize = 5;
/// Most ciphertext one record may carry (RFC 8446 5.2).
pub const MAX_CIPHER: usize = MAX_PLAIN + 256;
/// The largest record on the wire.
pub const MAX_RECORD: usize = HEADER + MAX_CIPHER;
/// What follows our own plaintext in a record: its inner content type and
/// the AEAD tag (we never pad).
pub const TAIL: usize = 1 + TAG;
const TAG: usize = 16;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;
/// Post-handshake messages larger than this are refused (a ticket is a
/// few hundred bytes; a KeyUpdate is one).
const MAX_HANDSHAKE: usize = 1 << 16;
/// Consecutive records without application data (empty records,
/// KeyUpdates, tickets, warnings) tolerated before the peer counts as
/// flooding us with work.
const MAX_IDLE_RECORDS: u32 = 32;

/// The key schedule rustls keeps after the handshake: new traffic secrets
/// on KeyUpdate, session tickets for a client.
pub trait Schedule: Send {
    /// The next secret for what we send.
    fn update_tx(&mut self) -> Result<ConnectionTrafficSecrets, Error>;
    /// The next secret for what we receive.
    fn update_rx(&mut self) -> Result<ConnectionTrafficSecrets, Error>;
    /// A NewSessionTicket body from the server.
    fn new_ticket(&mut self, body: &[u8]) -> Result<(), Error>;
}

impl Schedule for KernelConnection<ClientConnectionData> {
    fn update_tx(&mut self) -> Result<ConnectionTrafficSecrets, Error> {
        Ok(self.update_tx_secret()?.1)
    }
    fn update_rx(&mut self) -> Result<ConnectionTrafficSecrets, Error> {
        Ok(self.update_rx_secret()?.1)
    }
    fn new_ticket(&mut self, body: &[u8]) -> Result<(), Error> {
        self.handle_new_session_ticket(body)
    }
}

impl Schedule for KernelConnection<ServerConnectionData> {
    fn update_tx(&mut self) -> Result<ConnectionTrafficSecrets, Error> {
        Ok(self.update_tx_secret()?.1)
    }
    fn update_rx(&mut self) -> Result<ConnectionTrafficSecrets, Error> {
        Ok(self.update_rx_secret()?.1)
    }
    fn new_ticket(&mut self, _: &[u8]) -> Result<(), Error> {
        Err(unexpected("a client sent a session ticket"))
    }
}

/// A failure the peer must hear about: the alert to send, and the error.
#[derive(Debug)]
pub struct Fatal {
    /// What we tell the peer (`None`: the peer's own alert ended it).
    pub alert: Option<AlertDescription>,
    /// What we report.
    pub error: Error,
}

fn fatal(alert: AlertDescription, error: Error) -> Fatal {
    Fatal {
        alert: Some(alert),
        error,
    }
}

fn unexpected(why: &str) -> Error {
    Error::General(format!("unexpected TLS message after the handshake: {why}"))
}

/// One direction's AEAD key, IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(secrets: ConnectionTrafficSecrets, seq: u64) -> Result<Keys, Error> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(Error::General("unsupported cipher suite".into())),
        };
        let key = UnboundKey::new(alg, key.as_ref())
            .map_err(|_| Error::General("bad traffic key".into()))?;
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| Error::General("bad traffic IV".into()))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The nonce of the next record (RFC 8446 5.3), and the step to the one
    /// after; a sequence number never wraps.
    fn next_nonce(&mut self) -> Result<Nonce, Error> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(Error::EncryptError)?;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

fn header(len: usize) -> [u8; HEADER] {
    let l = (len as u16).to_be_bytes();
    [APPLICATION_DATA, 3, 3, l[0], l[1]]
}

/// The length of the whole record starting at `buf` once its header is
/// there (`None` before). Only protected records are valid after the
/// handshake, and none longer than [`MAX_CIPHER`].
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, Fatal> {
    let Some(h) = buf.get(..HEADER) else {
        return Ok(None);
    };
    if h[0] != APPLICATION_DATA {
        return Err(fatal(
            AlertDescription::UnexpectedMessage,
            unexpected("a record that is not protected"),
        ));
    }
    let len = u16::from_be_bytes([h[3], h[4]]) as usize;
    if len > MAX_CIPHER {
        return Err(fatal(
            AlertDescription::RecordOverflow,
            Error::PeerSentOversizedRecord,
        ));
    }
    Ok(Some(HEADER + len))
}

/// What a received record was.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Application data: this many bytes at `record[HEADER..]`.
    Data(usize),
    /// Nothing for the application (a KeyUpdate, a ticket, a warning).
    Nothing,
    /// The peer's close_notify: it sends nothing more.
    Closed,
}

/// A session's record layer after the handshake.
pub struct Tls {
    tx: Keys,
    rx: Keys,
    schedule: Box<dyn Schedule>,
    /// Records sealed with one key before it is replaced.
    tx_limit: u64,
    /// The peer asked us to update our key: a KeyUpdate goes out before our
    /// next record.
    owe_update: bool,
    /// A handshake message that spans records, being gathered.
    handshake: Vec<u8>,
    idle_records: u32,
    peer_closed: bool,
}

impl Tls {
    /// Takes over from rustls with the secrets (and next sequence numbers)
    /// it extracted. `tx_limit` is the suite's confidentiality limit.
    pub fn new(
        secrets: rustls::ExtractedSecrets,
        schedule: Box<dyn Schedule>,
        tx_limit: u64,
    ) -> Result<Tls, Error> {
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        Ok(Tls {
            tx: Keys::new(tx, tx_seq)?,
            rx: Keys::new(rx, rx_seq)?,
            schedule,
            tx_limit: tx_limit.clamp(1, u64::MAX - 1),
            owe_update: false,
            handshake: Vec::new(),
            idle_records: 0,
            peer_closed: false,
        })
    }

    /// The peer's close_notify arrived before the hand-over.
    pub fn set_peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// True once the peer's close_notify arrived.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Before sealing `records` more records: appends to `out` the
    /// KeyUpdate they must follow (the peer asked for one, or they would
    /// take our key past its limit).
    pub fn prepare(&mut self, records: usize, out: &mut Vec<u8>) -> Result<(), Error> {
        // An owed KeyUpdate only has to precede our next application data
        // (RFC 8446 4.6.3): none, none (nor after a close_notify).
        if records == 0 {
            return Ok(());
        }
        if self.owe_update || self.tx.seq.saturating_add(records as u64) > self.tx_limit {
            self.key_update(out)?;
        }
        Ok(())
    }

    /// Seals `plain` (at most [`MAX_PLAIN`] bytes) in place as one
    /// application-data record; returns its header and its tail.
    pub fn seal(&mut self, plain: &mut [u8]) -> Result<([u8; HEADER], [u8; TAIL]), Error> {
        self.seal_typed(APPLICATION_DATA, plain)
    }

    fn seal_typed(
        &mut self,
        typ: u8,
        plain: &mut [u8],
    ) -> Result<([u8; HEADER], [u8; TAIL]), Error> {
        debug_assert!(plain.len() <= MAX_PLAIN);
        let hdr = header(plain.len() + TAIL);
        let mut tail = [0u8; TAIL];
        let nonce = self.tx.next_nonce()?;
        self.tx
            .key
            .seal_in_place_scatter(nonce, Aad::from(hdr), plain, &[typ], &mut tail)
            .map_err(|_| Error::EncryptError)?;
        Ok((hdr, tail))
    }

    /// Appends a whole sealed record of `typ` holding `body` to `out`.
    fn seal_into(&mut self, typ: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let at = out.len();
        out.extend_from_slice(&[0; HEADER]);
        out.extend_from_slice(body);
        let (hdr, tail) = self.seal_typed(typ, &mut out[at + HEADER..])?;
        out[at..at + HEADER].copy_from_slice(&hdr);
        out.extend_from_slice(&tail);
        Ok(())
    }

    /// Appends a KeyUpdate record (not requesting one back) to `out`, then
    /// switches to the next sending key.
    pub fn key_update(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.seal_into(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        self.tx = Keys::new(self.schedule.update_tx()?, 0)?;
        self.owe_update = false;
        Ok(())
    }

    /// Appends an alert record to `out` (a close_notify, or a fatal one).
    pub fn alert(&mut self, what: AlertDescription, out: &mut Vec<u8>) -> Result<(), Error> {
        let level = if what == AlertDescription::CloseNotify {
            1
        } else {
            2
        };
        self.seal_into(ALERT, &[level, u8::from(what)], out)
    }

    /// Opens the whole record `rec` (as [`record_len`] delimited it) in
    /// place. Nothing in it is released unless it authenticated.
    pub fn open(&mut self, rec: &mut [u8]) -> Result<Inbound, Fatal> {
        let hdr: [u8; HEADER] = rec[..HEADER]
            .try_into()
            .map_err(|_| fatal(AlertDescription::DecodeError, Error::DecryptError))?;
        let nonce = self
            .rx
            .next_nonce()
            .map_err(|e| fatal(AlertDescription::InternalError, e))?;
        let plain = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(hdr), &mut rec[HEADER..])
            .map_err(|_| fatal(AlertDescription::BadRecordMac, Error::DecryptError))?;
        // The inner content type is the last non-zero byte (padding is zeros).
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(fatal(
                AlertDescription::UnexpectedMessage,
                unexpected("a record without a content type"),
            ));
        };
        // RFC 8446 5.4: the whole TLSInnerPlaintext (content, type and
        // padding) is at most 2^14 + 1 bytes.
        if end > MAX_PLAIN || plain.len() > MAX_PLAIN + 1 {
            return Err(fatal(
                AlertDescription::RecordOverflow,
                Error::PeerSentOversizedRecord,
            ));
        }
        let typ = plain[end];
        if typ != HANDSHAKE && !self.handshake.is_empty() {
            return Err(fatal(
                AlertDescription::UnexpectedMessage,
                unexpected("a record inside a handshake message"),
            ));
        }
        match typ {
            APPLICATION_DATA if end > 0 => {
                self.idle_records = 0;
                Ok(Inbound::Data(end))
            }
            APPLICATION_DATA => self.idle().map(|()| Inbound::Nothing),
            ALERT => self.on_alert(&plain[..end]),
            HANDSHAKE if end > 0 => {
                let body = plain[..end].to_vec();
                self.on_handshake(&body)
            }
            _ => Err(fatal(
                AlertDescription::UnexpectedMessage,
                unexpected("a record of an unexpected type"),
            )),
        }
    }

    /// Counts a record that brought no data.
    fn idle(&mut self) -> Result<(), Fatal> {
        self.idle_records += 1;
        if self.idle_records > MAX_IDLE_RECORDS {
            return Err(fatal(
                AlertDescription::UnexpectedMessage,
                Error::General("the peer sent too many records without data".into()),
            ));
        }
        Ok(())
    }

    fn on_alert(&mut self, a: &[u8]) -> Result<Inbound, Fatal> {
        let &[level, desc] = a else {
            return Err(fatal(
                AlertDescription::DecodeError,
                unexpected("a malformed alert"),
            ));
        };
        let desc = AlertDescription::from(desc);
        match (level, desc) {
            (_, AlertDescription::CloseNotify) => {
                self.peer_closed = true;
                Ok(Inbound::Closed)
            }
            (1, AlertDescription::UserCanceled) => self.idle().map(|()| Inbound::Nothing),
            (1, d) => Err(fatal(
                AlertDescription::DecodeError,
                Error::AlertReceived(d),
            )),
            (2, d) => Err(Fatal {
                alert: None,
                error: Error::AlertReceived(d),
            }),
            (_, d) => Err(fatal(
                AlertDescription::IllegalParameter,
                Error::AlertReceived(d),
            )),
        }
    }

    /// Gathers handshake bytes and acts on every whole message in them.
    fn on_handshake(&mut self, body: &[u8]) -> Result<Inbound, Fatal> {
        self.idle()?;
        self.handshake.extend_from_slice(body);
        let mut at = 0;
        while let Some(&[t, a, b, c]) = self.handshake.get(at..at + 4) {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE {
                return Err(fatal(
                    AlertDescription::HandshakeFailure,
                    Error::PeerMisbehaved(PeerMisbehaved::MessageInterleavedWithHandshakeMessage),
                ));
            }
            let Some(msg) = self.handshake.get(at + 4..at + 4 + len) else {
                break;
            };
            let msg = msg.to_vec();
            at += 4 + len;
            let last = at == self.handshake.len();
            match t {
                KEY_UPDATE => self.on_key_update(&msg, last)?,
                NEW_SESSION_TICKET => self
                    .schedule
                    .new_ticket(&msg)
                    .map_err(|e| fatal(AlertDescription::DecodeError, e))?,
                _ => {
                    return Err(fatal(
                        AlertDescription::UnexpectedMessage,
                        unexpected("a handshake message after the handshake"),
                    ));
                }
            }
        }
        self.handshake.drain(..at);
        if self.handshake.len() > MAX_HANDSHAKE {
            return Err(fatal(
                AlertDescription::HandshakeFailure,
                unexpected("an oversized handshake message"),
            ));
        }
        Ok(Inbound::Nothing)
    }

    /// A KeyUpdate ends its record (the next one is under the new key).
    fn on_key_update(&mut self, msg: &[u8], last: bool) -> Result<(), Fatal> {
        if !last {
            return Err(fatal(
                AlertDescription::UnexpectedMessage,
                Error::PeerMisbehaved(PeerMisbehaved::KeyEpochWithPendingFragment),
            ));
        }
        match msg {
            [0] => {}
            [1] => self.owe_update = true,
            _ => {
                return Err(fatal(
                    AlertDescription::DecodeError,
                    unexpected("a malformed KeyUpdate"),
                ));
            }
        }
        let next = self
            .schedule
            .update_rx()
            .map_err(|e| fatal(AlertDescription::InternalError, e))?;
        self.rx = Keys::new(next, 0).map_err(|e| fatal(AlertDescription::InternalError, e))?;
        Ok(())
    }
}

#[doc(hidden)]
pub mod memory;

#[cfg(test)]
mod tests;
