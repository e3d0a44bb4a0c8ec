//! What a person at a terminal sees while `send` runs: a progress bar, then
//! a one-line summary (only when stderr is a terminal; see `send`).

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pincat::events::human_bytes;
use pincat::{Event, Events, Mode, Transfer};

/// Events for a person at a terminal: a progress bar, then a one-line summary.
pub fn progress_events() -> Events {
    let bar = Mutex::new(None::<ProgressBar>);
    Events::stderr(Mode::Quiet).with_hook(move |e| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::TransferStarted { bytes, .. } => *bar = Some(new_bar(*bytes)),
            Event::Progress { bytes, .. } => {
                if let Some(pb) = bar.as_ref() {
                    pb.set_position(*bytes);
                }
            }
            Event::TransferDone(t) => {
                if let Some(pb) = bar.take() {
                    pb.finish_and_clear();
                }
                summary(t);
            }
            _ => {}
        }
    })
}

/// A bar for `bytes` to send, or a spinner when the size is not known.
fn new_bar(bytes: Option<u64>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(bytes, ProgressDrawTarget::stderr());
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

/// The line left on the terminal once the receiver confirmed the transfer.
fn summary(t: &Transfer) {
    let what = if t.files > 0 {
        format!("{} file(s), ", t.files)
    } else {
        String::new()
    };
    eprintln!(
        "pincat: sent {what}{} in {:.2} s ({}/s) to {}, receipt confirmed",
        human_bytes(t.bytes),
        t.duration.as_secs_f64(),
        human_bytes(pincat::events::rate(t.bytes, t.duration)),
        t.peer
    );
}
