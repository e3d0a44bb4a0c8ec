//! `pincat send`: the dialer and the giver. Connect to the pinned listener,
//! then give a stream or files; `Ok` only on a matching receipt.

use std::io::{self, Read};

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::events::{Event, Events, Transfer};
use crate::give::{self, Plan, Source};
use crate::net::dialer::{self, DialOptions};

/// How to reach and trust the receiver (the dialer's options).
pub type SendOptions = DialOptions;

/// What a confirmed send moved.
pub type SendReport = Transfer;

/// Sends `source` to the pinned receiver; `Ok` only after a matching receipt.
///
/// ```
/// use pincat::{send, Events, Output, SendOptions, ServeOptions, Server, Source};
/// let dir = std::env::temp_dir().join(format!("pincat-doc-{}", std::process::id()));
/// let mut serve = ServeOptions::new("127.0.0.1:0".parse().unwrap());
/// serve.output = Output::Path(dir.join("hello.txt"));
/// std::fs::create_dir_all(&dir).unwrap();
/// let server = Server::bind(serve, Events::silent()).unwrap();
/// let opts = SendOptions::new(server.local_addr().to_string(), server.fingerprint());
/// let receiver = std::thread::spawn(move || server.run());
///
/// let data: &'static [u8] = b"hello";
/// let report = send(&opts, Source::Reader(Box::new(data)), &Events::silent()).unwrap();
/// assert_eq!(report.bytes, 5);
/// receiver.join().unwrap().unwrap();
/// assert_eq!(std::fs::read(dir.join("hello.txt")).unwrap(), b"hello");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn send(opts: &SendOptions, source: Source, events: &Events) -> Result<SendReport> {
    opts.check()?;
    // Files can be planned again after a dropped connection: the receiver
    // keeps what arrived, and the next attempt sends only the rest.
    let again = match &source {
        Source::Paths(p) => opts.retry_for.map(|d| (p.clone(), Instant::now() + d)),
        _ => None,
    };
    let stream = !matches!(source, Source::Paths(_));
    // Everything local is settled before the receiver is contacted.
    let mut plan = Plan::new(source, events)?;
    let mut retrying = false;
    // Whether the receiver accepted: before that, nothing of a stream was
    // taken, and there is nothing to say about resuming it.
    let accepted = Cell::new(false);
    loop {
        let r = dialer::dial(opts, events).and_then(|mut s| {
            let peer = s.peer();
            let classify = |e, when: &str| opts.classify(e, peer, when);
            give::give(&mut s, plan, events, &classify, &accepted)
        });
        // After a dropped connection a one-shot receiver may not have
        // noticed yet, and say it is busy: that is worth waiting for too.
        let busy = |e: &Error| retrying && matches!(e, Error::Refused { code: "busy", .. });
        match (r, &again) {
            (Err(e), Some((paths, until)))
                if Instant::now() < *until
                    && (matches!(e, Error::Incomplete(_) | Error::Timeout(_)) || busy(&e)) =>
            {
                retrying = true;
                events.emit(Event::Warning {
                    message: format!("{e}; connecting again to resume (--retry-for)"),
                });
                std::thread::sleep(RETRY_PAUSE);
                plan = Plan::new(Source::Paths(paths.clone()), events)?;
            }
            (Err(Error::Incomplete(m)), _) if stream && accepted.get() => {
                return Err(Error::Incomplete(format!(
                    "{m}; a stream cannot resume: send it again from the start"
                )));
            }
            (r, _) => return r,
        }
    }
}

/// The pause before a sender whose connection dropped connects again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Raw mode: the same pinned TLS 1.3 session, but no pincat framing: `input`
/// is sent as plain bytes, then close_notify; whatever the peer sends back is
/// copied to `output` until it closes. For talking to `openssl s_server`,
/// `ncat --ssl`, `socat OPENSSL-LISTEN` or `pincat serve --raw`. There is no
/// receipt: success means every byte was handed to TLS and the peer ended
/// its reply with close_notify (a bare TCP close or a reset is an error:
/// the reply may be truncated).
pub fn send_raw(
    opts: &SendOptions,
    input: Box<dyn Read + Send>,
    output: &mut dyn io::Write,
    events: &Events,
) -> Result<SendReport> {
    let mut s = dialer::dial(opts, events)?;
    let peer = s.peer();
    give::give_raw(&mut s, input, output, events, &|e, when| {
        opts.classify(e, peer, when)
    })
}
pub use crate::net::dialer::{remote_fingerprint, remote_spki};
