//! Two rustls endpoints wired together in memory: the handshake and
//! record traffic without sockets, for unit tests and `benches/hot.rs`.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Error, ServerConfig, ServerConnection};

use super::SERVER_NAME;

/// A client and a server after their handshake, with its outcome.
pub struct Pair {
    /// The client side.
    pub client: ClientConnection,
    /// The server side.
    pub server: ServerConnection,
    /// The client's handshake result.
    pub client_result: Result<(), Error>,
    /// The server's handshake result.
    pub server_result: Result<(), Error>,
}

impl Pair {
    /// Runs the handshake between these configurations.
    pub fn new(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<Pair, Error> {
        let name = ServerName::try_from(SERVER_NAME)
            .map_err(|_| Error::General("bad server name".into()))?;
        let mut p = Pair {
            client: ClientConnection::new(client, name)?,
            server: ServerConnection::new(server)?,
            client_result: Ok(()),
            server_result: Ok(()),
        };
        for _ in 0..20 {
            let (c, s) = p.shuttle();
            p.client_result = c;
            p.server_result = s;
            let done = !p.client.is_handshaking()
                && !p.server.is_handshaking()
                && !p.client.wants_write()
                && !p.server.wants_write();
            if p.client_result.is_err() || p.server_result.is_err() || done {
                break;
            }
        }
        Ok(p)
    }

    /// Moves every pending record client -> server, then server ->
    /// client; returns what processing them gave on each side.
    pub fn shuttle(&mut self) -> (Result<(), Error>, Result<(), Error>) {
        let s = move_records(&mut self.client, &mut self.server);
        let c = move_records(&mut self.server, &mut self.client);
        (c, s)
    }
}

fn move_records<A, B, SA, SB>(from: &mut A, to: &mut B) -> Result<(), Error>
where
    A: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SA>>,
    B: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SB>>,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf)
            .map_err(|e| Error::General(e.to_string()))?;
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd)
            .map_err(|e| Error::General(e.to_string()))?;
        to.process_new_packets()?;
    }
    Ok(())
}
