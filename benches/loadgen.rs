//! Load generator for `scripts/bench`: many concurrent senders, each doing
//! complete small transfers (handshake + payload + receipt) in a loop
//! through the library API. Prints one JSON object.
//!
//! `cargo bench --bench loadgen -- ADDR PIN [CONCURRENCY] [SECONDS] [BYTES]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pincat::{Events, Fingerprint, SendOptions, Source};

fn main() {
    // cargo bench appends "--bench"; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.len() < 2 {
        eprintln!("usage: loadgen ADDR PIN [CONCURRENCY] [SECONDS] [BYTES]");
        std::process::exit(2);
    }
    let addr = args[0].clone();
    let pin: Fingerprint = match args[1].parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadgen: bad pin: {e}");
            std::process::exit(2);
        }
    };
    let conc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let secs: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let bytes: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);

    let opts = Arc::new(SendOptions::new(addr, pin));
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
