//! What a person sees while data moves, on either end: on a terminal a
//! bar per transfer (bytes, rate, ETA) below the event lines; on anything
//! else (a log file) a progress line every few seconds; then a summary.
//! `--quiet` and `--json` are left as they are.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pincat::events::{Kind, human_bytes, rate};
use pincat::{Event, Events, Mode, Transfer};

/// How often a transfer writes a progress line where there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Which end a person watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// `send`: only its own transfer matters; the events themselves are
    /// quiet, a summary ends it.
    Sender,
    /// The listening verbs and `get`: every event line, and progress.
    Other,
}

/// The event sink for `mode` on stderr, with progress for people in human
/// mode: bars on a terminal, periodic lines elsewhere.
pub fn watched(mode: Mode, seat: Seat) -> Events {
    if mode != Mode::Human {
        return Events::stderr(mode);
    }
    let screen = Arc::new(Screen::new(seat));
    let lines = match seat {
        Seat::Sender => Mode::Quiet,
        Seat::Other => Mode::Human,
    };
    let hook = screen.clone();
    Events::to_writer(lines, Box::new(Stderr(screen.clone()))).with_hook(move |e| hook.on(e))
}

/// One transfer being watched.
struct Watch {
    giving: bool,
    started: Instant,
    /// When its last progress line was written (no terminal).
    last_line: Instant,
    bar: Option<ProgressBar>,
}

/// Where progress is drawn, and the transfers drawn.
struct Screen {
    seat: Seat,
    /// The bars, on a terminal only.
    bars: Option<MultiProgress>,
    watches: Mutex<HashMap<SocketAddr, Watch>>,
}

impl Screen {
    fn new(seat: Seat) -> Screen {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Screen {
            seat,
            bars,
            watches: Mutex::new(HashMap::new()),
        }
    }

    fn watches(&self) -> MutexGuard<'_, HashMap<SocketAddr, Watch>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` to stderr, above the bars when there are some.
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let put = || {
            let mut err = std::io::stderr().lock();
            err.write_all(bytes).and_then(|()| err.flush())
        };
        match &self.bars {
            Some(m) => m.suspend(put),
            None => put(),
        }
    }

    /// One line for a person (nothing useful can be done if stderr is gone).
    fn line(&self, text: &str) {
        let _ = self.write(format!("{text}\n").as_bytes());
    }

    /// Every event passes here before its own line (if any) is written.
    fn on(&self, e: &Event) {
        match e {
            Event::TransferStarted {
                peer,
                giving,
                bytes,
                ..
            } => self.start(*peer, *giving, *bytes),
            Event::Progress { peer, bytes, total } => self.advance(*peer, *bytes, *total),
            Event::TransferDone(t) => {
                self.stop(t.peer);
                if self.seat == Seat::Sender {
                    self.line(&summary(t));
                }
            }
            Event::Error {
                peer: Some(peer), ..
            }
            | Event::Refused { peer, .. }
            | Event::Closed { peer, .. } => self.stop(*peer),
            _ => {}
        }
    }

    fn start(&self, peer: SocketAddr, giving: bool, bytes: Option<u64>) {
        let bar = self.bars.as_ref().map(|m| m.add(new_bar(bytes)));
        let now = Instant::now();
        let old = self.watches().insert(
            peer,
            Watch {
                giving,
                started: now,
                last_line: now,
                bar,
            },
        );
        if let Some(b) = old.and_then(|w| w.bar) {
            b.finish_and_clear();
        }
    }

    fn advance(&self, peer: SocketAddr, bytes: u64, total: Option<u64>) {
        let mut watches = self.watches();
        let Some(w) = watches.get_mut(&peer) else {
            return;
        };
        if let Some(b) = &w.bar {
            b.set_position(bytes);
            return;
        }
        let now = Instant::now();
        if now.duration_since(w.last_line) < LOG_EVERY {
            return;
        }
        w.last_line = now;
        let text = log_line(peer, w, bytes, total);
        drop(watches);
        self.line(&text);
    }

    /// The transfer with `peer` ended (or failed): its bar goes.
    fn stop(&self, peer: SocketAddr) {
        let gone = self.watches().remove(&peer);
        if let Some(b) = gone.and_then(|w| w.bar) {
            b.finish_and_clear();
            if let Some(m) = &self.bars {
                m.remove(&b);
            }
        }
    }
}

/// The sink events are written to: stderr, above the bars.
struct Stderr(Arc<Screen>);

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A bar for `bytes` to move, or a spinner when the size is not known.
fn new_bar(bytes: Option<u64>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(bytes, ProgressDrawTarget::hidden());
    let template = if bytes.is_some() {
        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {bytes} {binary_bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

/// A progress line for a log: what moved, of how much, how fast, how long
/// is left.
fn log_line(peer: SocketAddr, w: &Watch, bytes: u64, total: Option<u64>) -> String {
    let (verb, dir) = match w.giving {
        true => ("sent", "to"),
        false => ("received", "from"),
    };
    let elapsed = w.started.elapsed();
    let speed = rate(bytes, elapsed);
    let (of, left) = match total {
        Some(t) if t > 0 => {
            let pct = (bytes as f64 * 100.0 / t as f64).min(100.0);
            let left = match speed {
                0 => String::new(),
                s => format!(", about {} left", eta(t.saturating_sub(bytes) / s)),
            };
            (format!(" of {} ({pct:.0}%)", human_bytes(t)), left)
        }
        _ => (String::new(), String::new()),
    };
    format!(
        "pincat: {verb} {}{of} {dir} {peer} in {}, {}/s{left}",
        human_bytes(bytes),
        eta(elapsed.as_secs()),
        human_bytes(speed)
    )
}

/// `1h 2m`, `3m 20s` or `45s`.
fn eta(secs: u64) -> String {
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// The line a sender ends with once the receiver confirmed the transfer
/// (raw mode has no receipt, and says so).
fn summary(t: &Transfer) -> String {
    let what = if t.files > 0 {
        format!("{} file(s), ", t.files)
    } else {
        String::new()
    };
    let how = match t.kind {
        Kind::Raw => "raw: no receipt",
        Kind::Stream | Kind::Files => "receipt confirmed",
    };
    format!(
        "pincat: sent {what}{} in {:.2} s ({}/s) to {}, {how}",
        human_bytes(t.bytes),
        t.duration.as_secs_f64(),
        human_bytes(rate(t.bytes, t.duration)),
        t.peer
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_says_how_much_of_what_and_how_long_is_left() {
        let peer: SocketAddr = "192.0.2.1:7878".parse().unwrap();
        let w = Watch {
            giving: false,
            started: Instant::now() - Duration::from_secs(10),
            last_line: Instant::now(),
            bar: None,
        };
        let l = log_line(peer, &w, 50 << 20, Some(100 << 20));
        assert!(
            l.starts_with(
                "pincat: received 50.0 MiB of 100.0 MiB (50%) from 192.0.2.1:7878 in 10s, 5.0 MiB/s, about "
            ),
            "{l}"
        );
        let w = Watch { giving: true, ..w };
        let l = log_line(peer, &w, 3 << 20, None);
        assert!(
            l.starts_with("pincat: sent 3.0 MiB to 192.0.2.1:7878 in 10s"),
            "{l}"
        );
        assert!(!l.contains('%'), "{l}");
        assert_eq!(eta(3725), "1h 2m");
        assert_eq!(eta(200), "3m 20s");
        assert_eq!(eta(45), "45s");
    }
}
