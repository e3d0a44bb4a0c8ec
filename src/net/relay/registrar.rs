//! A listener's registrations at its relay: a few connections, each
//! waiting to be paired, handed to the accept loop as accepted sockets
//! once the relay says `ok`, and replaced at once. A relay that cannot be
//! reached is tried again with a growing pause (said once, not per try).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{RelayError, connect, register};
use crate::events::{Event, Events};

/// How often a waiting registration looks at the stop flag.
const TICK: Duration = Duration::from_millis(250);
/// The longest pause between attempts on a relay that fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one registration waits before it is made again (a relay
/// restarted meanwhile, or a NAT that forgot the connection, then sees a
/// fresh one); shorter than `pincat relay`'s default pending timeout.
const REREGISTER: Duration = Duration::from_secs(240);
/// The shortest time between two pairings of one slot: a relay that says
/// `ok` at once, again and again, costs a few sockets a second, no more.
const MIN_PAIRING: Duration = Duration::from_millis(100);

/// A socket the relay paired, with the relay's address (the only peer
/// address a relayed connection has).
pub type Paired = (TcpStream, SocketAddr);

/// Keeps `slots` registrations waiting at a relay until dropped.
pub struct Registrar {
    stop: Arc<AtomicBool>,
    rx: Mutex<mpsc::Receiver<Paired>>,
}

struct Slot {
    /// Its place among the listener's slots (staggers re-registrations).
    index: usize,
    relay: String,
    token: String,
    side: String,
    connect_timeout: Duration,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Paired>,
    wake: Arc<UnixStream>,
    events: Arc<Events>,
    /// Whether a failure was already reported (cleared by a success).
    told: Arc<AtomicBool>,
}

impl Registrar {
    /// Starts `slots` registrations for `token` under one random `side`;
    /// each paired socket is queued and `wake` poked.
    pub fn start(
        relay: &str,
        token: String,
        slots: usize,
        connect_timeout: Duration,
        wake: Arc<UnixStream>,
        events: Arc<Events>,
    ) -> std::io::Result<Registrar> {
        let side = super::new_side()?;
        let stop = Arc::new(AtomicBool::new(false));
        let told = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        for i in 0..slots.max(1) {
            let slot = Slot {
                index: i,
                relay: relay.to_string(),
                token: token.clone(),
                side: side.clone(),
                connect_timeout,
                stop: stop.clone(),
                tx: tx.clone(),
                wake: wake.clone(),
                events: events.clone(),
                told: told.clone(),
            };
            thread::Builder::new()
                .name(format!("relay-slot-{i}"))
                .spawn(move || slot.run())?;
        }
        Ok(Registrar {
            stop,
            rx: Mutex::new(rx),
        })
    }

    /// Every socket paired since the last call.
    pub fn paired(&self) -> Vec<Paired> {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        rx.try_iter().collect()
    }
}

impl Registrar {
    /// Ends every registration: each slot sees the flag within a tick and
    /// closes its socket.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Slot {
    fn run(self) {
        let mut pause = Duration::from_millis(250);
        let mut closed = 0;
        let stopped = || self.stop.load(Ordering::SeqCst);
        while !stopped() {
            let began = std::time::Instant::now();
            match self.once(&stopped) {
                Ok(paired) => {
                    (pause, closed) = (Duration::from_millis(250), 0);
                    self.told.store(false, Ordering::SeqCst);
                    if self.tx.send(paired).is_err() {
                        return;
                    }
                    let _ = (&*self.wake).write(&[1]);
                    thread::sleep(MIN_PAIRING.saturating_sub(began.elapsed()));
                }
                Err(_) if stopped() => return,
                // Its time was up: register afresh at once.
                Err(RelayError::Timeout) => {}
                // A transit relay drops a listener's spare registrations
                // when one is paired: register again at once, and only
                // call it a failure when it keeps happening.
                Err(RelayError::Io(_)) if closed < 5 => {
                    // One that waited a while was a spare, not a failure.
                    closed = match began.elapsed() > Duration::from_secs(1) {
                        true => 0,
                        false => closed + 1,
                    };
                    thread::sleep(TICK);
                }
                Err(e) => {
                    if !self.told.swap(true, Ordering::SeqCst) {
                        self.events.emit(Event::Warning {
                            message: format!(
                                "relay {}: {e}; trying again (every {} s at most)",
                                self.relay,
                                MAX_BACKOFF.as_secs()
                            ),
                        });
                    }
                    let until = std::time::Instant::now() + pause;
                    while !stopped() && std::time::Instant::now() < until {
                        thread::sleep(TICK);
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn once(&self, stopped: &dyn Fn() -> bool) -> Result<Paired, RelayError> {
        let mut sock = connect(&self.relay, self.connect_timeout)?;
        let peer = sock.peer_addr().map_err(RelayError::Io)?;
        let (idle, interval) = (Duration::from_secs(30), Duration::from_secs(10));
        let _ = crate::sys::keepalive(&sock, idle, interval, 3);
        // Slots re-register at different times, never all at once.
        let wait = REREGISTER + Duration::from_secs(7 * self.index as u64);
        register(
            &mut sock,
            &self.token,
            &self.side,
            Some(wait),
            TICK,
            stopped,
        )?;
        Ok((sock, peer))
    }
}
