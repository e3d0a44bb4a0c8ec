//! Load generator for `scripts/bench`: many concurrent senders, each doing
//! complete small transfers (handshake + payload + receipt) in a loop
//! through the library API. Prints one JSON object.
//!
//! `cargo run --release --example loadgen -- ADDR PIN [N] [SECS] [SIZE]`: N
//! concurrent senders (default 8) for SECS seconds (default 5), SIZE bytes
//! per transfer (default 1024). With `PINCAT_LOADGEN_CODE` set, every
//! transfer proves that code first, as to a listener in the default mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pincat::{Events, Fingerprint, SendOptions, Source};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(2..=5).contains(&args.len()) {
        eprintln!("usage: loadgen ADDR PIN [N] [SECS] [SIZE]");
        std::process::exit(2);
    }
    let addr = args[0].clone();
    let pin: Fingerprint = parse(&args[1], "PIN");
    let conc: usize = args.get(2).map_or(8, |s| parse(s, "N"));
    let secs: f64 = args.get(3).map_or(5.0, |s| parse(s, "SECS"));
    let bytes: usize = args.get(4).map_or(1024, |s| parse(s, "SIZE"));

    let mut opts = SendOptions::new(addr, pin);
    if let Ok(code) = std::env::var("PINCAT_LOADGEN_CODE") {
        opts.code = Some(pincat::pair::Code::parse(&code).unwrap_or_else(|e| {
            eprintln!("loadgen: PINCAT_LOADGEN_CODE: {e}");
            std::process::exit(2)
        }));
    }
    let opts = Arc::new(opts);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let payload: Arc<Vec<u8>> = Arc::new(vec![b'x'; bytes]);
    let start = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (opts, stop, ok, failed, payload) = (
                opts.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                payload.clone(),
            );
            thread::spawn(move || {
                let events = Events::silent();
                while !stop.load(Ordering::Relaxed) {
                    let src = Source::Reader(Box::new(std::io::Cursor::new(payload.to_vec())));
                    match pincat::send(&opts, src, &events) {
                        Ok(r) if r.bytes == payload.len() as u64 => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        "{{\"transfers\":{n},\"failed\":{},\"seconds\":{elapsed:.3},\"per_second\":{:.1},\"concurrency\":{conc}}}",
        failed.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
}

/// Parses one argument or exits with a usage error naming it.
fn parse<T: std::str::FromStr>(s: &str, what: &str) -> T
where
    T::Err: std::fmt::Display,
{
    s.parse().unwrap_or_else(|e| {
        eprintln!("loadgen: bad {what} {s:?}: {e}");
        std::process::exit(2);
    })
}
