//! rustls endpoints on the unbuffered API pumped in memory, and pairs of
//! [`Tls`] record layers made from them: for the unit tests and the
//! benchmarks, no sockets.

use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use rustls::{ClientConfig, Error, ServerConfig};

use super::Tls;
use crate::session::Handshaking;

/// Where pumping stopped.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// rustls waits for input.
    Blocked,
    /// rustls may send application data.
    Traffic,
    /// Both sides closed.
    Closed,
}

/// A rustls endpoint and its input, with what it wrote and what it read.
pub struct Peer<H> {
    /// The connection.
    pub conn: H,
    /// What the other side sent, not yet processed.
    pub inbox: Vec<u8>,
    /// What this side wrote.
    pub out: Vec<u8>,
    /// Application data this side read.
    pub got: Vec<u8>,
    /// The other side's close_notify arrived.
    pub peer_closed: bool,
}

impl<H: Handshaking> Peer<H> {
    /// A fresh endpoint.
    pub fn new(conn: H) -> Self {
        Peer {
            conn,
            inbox: Vec::new(),
            out: Vec::new(),
            got: Vec::new(),
            peer_closed: false,
        }
    }

    /// Processes the inbox until rustls waits for input or for data to
    /// send; `then` runs on a WriteTraffic state.
    pub fn pump_with(
        &mut self,
        mut then: impl FnMut(rustls::unbuffered::WriteTraffic<'_, H::Data>, &mut Vec<u8>),
    ) -> Result<Stop, Error> {
        let mut used = false;
        loop {
            let st = self.conn.process(&mut self.inbox);
            let discard = st.discard;
            let r = match st.state? {
                ConnectionState::EncodeTlsData(mut e) => {
                    let mut b = vec![0u8; 1 << 16];
                    let n = e
                        .encode(&mut b)
                        .map_err(|e| Error::General(e.to_string()))?;
                    self.out.extend_from_slice(&b[..n]);
                    None
                }
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        self.got.extend_from_slice(rec?.payload);
                    }
                    None
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Stop::Closed),
                ConnectionState::BlockedHandshake => Some(Stop::Blocked),
                ConnectionState::WriteTraffic(w) if !used => {
                    used = true;
                    then(w, &mut self.out);
                    None
                }
                ConnectionState::WriteTraffic(_) => Some(Stop::Traffic),
                s => return Err(Error::General(format!("unexpected state {s:?}"))),
            };
            self.inbox.drain(..discard);
            if let Some(s) = r {
                return Ok(s);
            }
        }
    }

    /// Processes the inbox (see [`Peer::pump_with`]).
    pub fn pump(&mut self) -> Result<Stop, Error> {
        self.pump_with(|_, _| {})
    }

    /// rustls encrypts `data` as application data.
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        self.pump_with(|mut w, out| {
            let at = out.len();
            out.resize(at + data.len() + 4096, 0);
            let n = w.encrypt(data, &mut out[at..]).unwrap_or(0);
            out.truncate(at + n);
        })
        .map(|_| ())
    }
}

/// Runs the handshake between `c` and `s`.
pub fn handshake<A: Handshaking, B: Handshaking>(
    c: &mut Peer<A>,
    s: &mut Peer<B>,
) -> Result<(), Error> {
    for _ in 0..10 {
        let cs = c.pump()?;
        s.inbox.append(&mut c.out);
        let ss = s.pump()?;
        c.inbox.append(&mut s.out);
        if cs == Stop::Traffic && ss == Stop::Traffic && c.inbox.is_empty() {
            return Ok(());
        }
    }
    Err(Error::General("the handshake did not finish".into()))
}

/// A client's and a server's record layers after their handshake.
pub fn pair(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<(Tls, Tls), Error> {
    let name = ServerName::try_from(crate::verify::SERVER_NAME)
        .map_err(|_| Error::General("bad server name".into()))?;
    let mut c = Peer::new(UnbufferedClientConnection::new(client, name)?);
    let mut s = Peer::new(UnbufferedServerConnection::new(server)?);
    handshake(&mut c, &mut s)?;
    let (cs, ck) = c.conn.into_kernel()?;
    let (ss, sk) = s.conn.into_kernel()?;
    Ok((Tls::new(cs, ck, 1 << 24)?, Tls::new(ss, sk, 1 << 24)?))
}
