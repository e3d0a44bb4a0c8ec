//! The listener's side of the code: how many attempts it grants. Every
//! session in which the listener sent its SPAKE2 share counts as an attempt
//! until the dialer's confirmation checks out, whether it then failed,
//! aborted or timed out; shares are only sent while failures plus attempts
//! in flight stay under the budget, so parallel connections gain nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Code;
use crate::error::{Error, Result};

/// How a listener spends its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePolicy {
    /// One peer: after this many failed attempts the listener ends (exit
    /// 10); after one success no other attempt is taken.
    OneShot(u32),
    /// Many peers: each failure delays the next attempt (one second more
    /// each time, at most ten); after this many no code is accepted.
    KeepOpen(u32),
}

impl GatePolicy {
    /// The documented budgets: 3 for a one-shot listener, 20 kept open.
    pub fn for_listener(keep_open: bool) -> GatePolicy {
        match keep_open {
            true => GatePolicy::KeepOpen(20),
            false => GatePolicy::OneShot(3),
        }
    }

    /// Failed attempts allowed.
    pub fn budget(self) -> u32 {
        match self {
            GatePolicy::OneShot(n) | GatePolicy::KeepOpen(n) => n,
        }
    }
}

/// What the gate says to a dialer that sent its share.
#[derive(Debug)]
pub enum Verdict {
    /// Go on; the attempt counts as failed unless confirmed.
    Go(Attempt),
    /// No more codes: the budget is spent, or a one-shot listener paired.
    Closed,
    /// Too many failures lately: try again after this long.
    Wait(Duration),
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    in_flight: u32,
    paired: bool,
    not_before: Option<Instant>,
    exhausted_said: bool,
}

/// Called once when the budget is spent, with the failure count.
pub type OnExhausted = Box<dyn Fn(u32) + Send + Sync>;

struct Inner {
    code: Code,
    policy: GatePolicy,
    state: Mutex<State>,
    /// For a fixed code: where its failures are kept across restarts.
    file: Option<PathBuf>,
    on_exhausted: Mutex<Option<OnExhausted>>,
}

/// A listener's code and its attempt budget, shared by its connections.
#[derive(Clone)]
pub struct Gate(Arc<Inner>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.0.policy)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for a fresh code: its budget lives as long as the process.
    pub fn new(code: Code, policy: GatePolicy) -> Gate {
        Gate::with_state(code, policy, None, 0)
    }

    /// A gate for a fixed code: failures are kept in `dir` across restarts,
    /// and a code whose budget is already spent is refused (exit 10).
    pub fn fixed(code: Code, policy: GatePolicy, dir: PathBuf) -> Result<Gate> {
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            })
            .with_context(|| {
                format!(
                    "cannot keep the code's failed attempts in {}",
                    dir.display()
                )
            })?;
        let file = dir.join(file_name(&code));
        let failures = match std::fs::read_to_string(&file) {
            Ok(s) => s.trim().parse::<u32>().unwrap_or(u32::MAX),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", file.display()).into()),
        };
        if failures >= policy.budget() {
            return Err(Error::CodeAttempts(format!(
                "this code has already failed {failures} times (the count is kept in {}); choose a new code",
                file.display()
            )));
        }
        Ok(Gate::with_state(code, policy, Some(file), failures))
    }

    fn with_state(code: Code, policy: GatePolicy, file: Option<PathBuf>, failures: u32) -> Gate {
        let state = State {
            failures,
            ..State::default()
        };
        Gate(Arc::new(Inner {
            code,
            policy,
            state: Mutex::new(state),
            file,
            on_exhausted: Mutex::new(None),
        }))
    }

    /// Runs `f` once the budget is spent (a one-shot listener ends there).
    pub fn on_exhausted(&self, f: OnExhausted) {
        *lock(&self.0.on_exhausted) = Some(f);
    }

    /// The code.
    pub fn code(&self) -> &Code {
        &self.0.code
    }

    /// The policy.
    pub fn policy(&self) -> GatePolicy {
        self.0.policy
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        lock(&self.0.state).failures
    }

    /// Asks for one attempt.
    pub fn reserve(&self) -> Verdict {
        let mut st = lock(&self.0.state);
        let budget = self.0.policy.budget();
        if st.failures + st.in_flight >= budget {
            return Verdict::Closed;
        }
        if let Some(t) = st.not_before {
            let left = t.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Verdict::Wait(left.max(Duration::from_secs(1)));
            }
        }
        if matches!(self.0.policy, GatePolicy::OneShot(_)) && st.in_flight > 0 {
            // One peer: a second attempt waits for the first to end.
            return Verdict::Wait(Duration::from_secs(1));
        }
        st.in_flight += 1;
        Verdict::Go(Attempt {
            gate: Some(self.clone()),
        })
    }

    fn settle(&self, ok: bool) {
        let mut st = lock(&self.0.state);
        st.in_flight = st.in_flight.saturating_sub(1);
        st.not_before = None;
        if ok {
            st.paired = matches!(self.0.policy, GatePolicy::OneShot(_));
            return;
        }
        st.failures += 1;
        if let GatePolicy::KeepOpen(_) = self.0.policy {
            let delay = Duration::from_secs(u64::from(st.failures.min(10)));
            st.not_before = Some(Instant::now() + delay);
        }
        let failures = st.failures;
        // A listener that already admitted its peer is not ended by later
        // failures (its transfer goes on); it only takes no more codes.
        let spent = failures >= self.0.policy.budget() && !st.exhausted_said && !st.paired;
        st.exhausted_said |= spent;
        drop(st);
        if let Some(file) = &self.0.file {
            // Best effort: a count that cannot be written is reported, and
            // the in-memory budget still holds for this process.
            if let Err(e) = write_count(file, failures) {
                eprintln!(
                    "pincat: warning: cannot record a failed code attempt in {}: {e}",
                    file.display()
                );
            }
        }
        if spent && let Some(f) = lock(&self.0.on_exhausted).as_ref() {
            f(failures);
        }
    }
}

/// One attempt in flight: a failure unless [`Attempt::confirmed`] is called.
#[derive(Debug)]
pub struct Attempt {
    gate: Option<Gate>,
}

impl Attempt {
    /// The dialer proved the code.
    pub fn confirmed(mut self) {
        if let Some(g) = self.gate.take() {
            g.settle(true);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(g) = self.gate.take() {
            g.settle(false);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The file a fixed code's count is kept in: named by a hash of the code
/// (the directory is the user's own, mode 0700).
fn file_name(code: &Code) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(
        [
            b"pincat code failures v1 ".as_slice(),
            code.as_str().as_bytes(),
        ]
        .concat(),
    );
    format!("code-{}.failures", hex::encode(&h[..12]))
}

fn write_count(file: &std::path::Path, n: u32) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{n}\n"))?;
    std::fs::rename(&tmp, file)
}

/// Where fixed codes keep their failed attempts: `$PINCAT_STATE_DIR`,
/// else `$XDG_STATE_HOME/pincat`, else `~/.local/state/pincat`.
pub fn state_dir() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("PINCAT_STATE_DIR") {
        return Ok(PathBuf::from(p));
    }
    var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("pincat"))
        .ok_or_else(|| {
            anyhow::anyhow!("cannot find a state directory: set PINCAT_STATE_DIR or HOME").into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> Code {
        Code::parse("acid-acorn-acre").unwrap()
    }

    #[test]
    fn a_one_shot_gate_takes_one_attempt_at_a_time_and_three_failures() {
        let g = Gate::new(code(), GatePolicy::OneShot(3));
        let spent = Arc::new(Mutex::new(0));
        let seen = spent.clone();
        g.on_exhausted(Box::new(move |n| *lock(&seen) = n));
        for i in 1..=3 {
            let Verdict::Go(a) = g.reserve() else {
                panic!("attempt {i}")
            };
            assert!(
                !matches!(g.reserve(), Verdict::Go(_)),
                "a second one in parallel"
            );
            drop(a);
            assert_eq!(g.failures(), i);
        }
        assert_eq!(*lock(&spent), 3);
        assert!(matches!(g.reserve(), Verdict::Closed));
    }

    #[test]
    fn a_one_shot_gate_is_not_ended_by_failures_after_a_success() {
        let g = Gate::new(code(), GatePolicy::OneShot(1));
        let ended = Arc::new(Mutex::new(false));
        let seen = ended.clone();
        g.on_exhausted(Box::new(move |_| *lock(&seen) = true));
        let Verdict::Go(a) = g.reserve() else {
            panic!()
        };
        a.confirmed();
        let Verdict::Go(b) = g.reserve() else {
            panic!()
        };
        drop(b);
        assert!(!*lock(&ended));
        assert!(matches!(g.reserve(), Verdict::Closed));
    }

    #[test]
    fn a_kept_open_gate_delays_after_a_failure_and_counts_in_flight_attempts() {
        let g = Gate::new(code(), GatePolicy::KeepOpen(2));
        let Verdict::Go(a) = g.reserve() else {
            panic!()
        };
        let Verdict::Go(b) = g.reserve() else {
            panic!()
        };
        assert!(
            matches!(g.reserve(), Verdict::Closed),
            "two in flight use the budget"
        );
        b.confirmed();
        drop(a);
        assert!(matches!(g.reserve(), Verdict::Wait(d) if d >= Duration::from_secs(1)));
    }

    #[test]
    fn a_fixed_codes_failures_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::fixed(code(), GatePolicy::OneShot(2), dir.path().into()).unwrap();
        let Verdict::Go(a) = g.reserve() else {
            panic!()
        };
        drop(a);
        let g = Gate::fixed(code(), GatePolicy::OneShot(2), dir.path().into()).unwrap();
        assert_eq!(g.failures(), 1);
        let Verdict::Go(a) = g.reserve() else {
            panic!()
        };
        drop(a);
        let e = Gate::fixed(code(), GatePolicy::OneShot(2), dir.path().into()).unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::CodeAttempts, "{e}");
        // Another code has its own count.
        let other = Code::parse("zoom zone zero").unwrap();
        assert!(Gate::fixed(other, GatePolicy::OneShot(2), dir.path().into()).is_ok());
    }
}
