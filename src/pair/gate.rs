//! The listener's side of the code: how many attempts it grants. Every
//! session in which the listener sent its SPAKE2 share counts as an attempt
//! until the dialer's confirmation checks out, whether it then failed,
//! aborted or timed out; shares are only sent while failures plus attempts
//! in flight stay under the budget, so parallel connections gain nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Code;
use super::failures::FailureFile;
use crate::error::{Error, Result};

/// How a listener spends its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePolicy {
    /// One peer: after this many failed attempts the listener ends (exit
    /// 10); while a confirmed peer is served, no other attempt is taken.
    OneShot(u32),
    /// Many peers: once one attempt failed, attempts are taken one at a
    /// time, each failure delaying the next (one second more each time, at
    /// most ten); after this many no code is accepted.
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
    /// No more codes: the budget is spent.
    Closed,
    /// Too many failures lately: try again after this long.
    Wait(Duration),
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    in_flight: u32,
    /// A one-shot listener is serving the peer that proved the code.
    serving: bool,
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
    file: Option<FailureFile>,
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
    /// Whether the code was given (`--code`), not made for this run: only
    /// such a code admits the same peer again after a restart.
    pub fn is_fixed(&self) -> bool {
        self.0.file.is_some()
    }

    /// A gate for a fresh code: its budget lives as long as the process.
    pub fn new(code: Code, policy: GatePolicy) -> Gate {
        Gate::with_state(code, policy, None, 0)
    }

    /// A gate for a fixed code: failures are kept in `dir` across restarts,
    /// and a code whose budget is already spent is refused (exit 10).
    pub fn fixed(code: Code, policy: GatePolicy, dir: PathBuf) -> Result<Gate> {
        let file = FailureFile::open(&dir, &code)?;
        let failures = file.read().map_err(|e| {
            anyhow::anyhow!(
                "cannot read the code's failed attempts in {}: {e}",
                dir.display()
            )
        })?;
        if failures >= policy.budget() {
            return Err(Error::CodeAttempts(format!(
                "this code has already failed {failures} times (the count is kept in {}); choose a new code",
                dir.display()
            )));
        }
        Ok(Gate::with_state(code, policy, Some(file), failures))
    }

    fn with_state(
        code: Code,
        policy: GatePolicy,
        file: Option<FailureFile>,
        failures: u32,
    ) -> Gate {
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
        if st.serving {
            // The code is in use: a one-shot listener usually ends with
            // this peer; if it does not (its transfer was refused), the
            // code is good again.
            return Verdict::Wait(Duration::from_secs(1));
        }
        if let Some(t) = st.not_before {
            let left = t.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Verdict::Wait(left.max(Duration::from_secs(1)));
            }
        }
        let one_at_a_time = match self.0.policy {
            // One peer: a second attempt waits for the first to end.
            GatePolicy::OneShot(_) => true,
            // Many peers at once, until someone fails: then parallel
            // attempts would skip the delays.
            GatePolicy::KeepOpen(_) => st.failures > 0,
        };
        if one_at_a_time && st.in_flight > 0 {
            return Verdict::Wait(Duration::from_secs(1));
        }
        st.in_flight += 1;
        Verdict::Go(Attempt {
            gate: Some(self.clone()),
        })
    }

    fn settle(&self, ok: bool) {
        // A failure is recorded first (other listeners with the same fixed
        // code add theirs to the same count). Best effort: a count that
        // cannot be written is reported, and the in-memory budget holds.
        let recorded = match (&self.0.file, ok) {
            (Some(file), false) => file
                .bump()
                .map_err(|e| {
                    eprintln!(
                        "pincat: warning: cannot record a failed code attempt in {}: {e}",
                        file.dir().display()
                    )
                })
                .ok(),
            _ => None,
        };
        let mut st = lock(&self.0.state);
        st.in_flight = st.in_flight.saturating_sub(1);
        st.not_before = None;
        if ok {
            st.serving = matches!(self.0.policy, GatePolicy::OneShot(_));
            return;
        }
        st.failures = (st.failures + 1).max(recorded.unwrap_or(0));
        if let GatePolicy::KeepOpen(_) = self.0.policy {
            let delay = Duration::from_secs(u64::from(st.failures.min(10)));
            st.not_before = Some(Instant::now() + delay);
        }
        let failures = st.failures;
        let spent = failures >= self.0.policy.budget() && !st.exhausted_said;
        st.exhausted_said |= spent;
        drop(st);
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
    /// The dialer proved the code. A one-shot listener takes no other
    /// attempt until the returned guard is dropped (its peer is served).
    pub fn confirmed(mut self) -> Serving {
        let gate = self.gate.take();
        if let Some(g) = &gate {
            g.settle(true);
        }
        Serving { gate }
    }
}

/// While alive, a one-shot listener is serving the peer that proved its
/// code, and answers other dialers "wait".
#[derive(Debug, Default)]
#[must_use = "dropping it at once lets another dialer with the code in"]
pub struct Serving {
    gate: Option<Gate>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(g) = self.gate.take() {
            lock(&g.0.state).serving = false;
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

    /// The attempt the gate grants now (a test failure if it does not).
    fn go(g: &Gate) -> Attempt {
        match g.reserve() {
            Verdict::Go(a) => a,
            v => panic!("no attempt: {v:?}"),
        }
    }

    #[test]
    fn a_one_shot_gate_takes_one_attempt_at_a_time_and_three_failures() {
        let g = Gate::new(code(), GatePolicy::OneShot(3));
        let spent = Arc::new(Mutex::new(0));
        let seen = spent.clone();
        g.on_exhausted(Box::new(move |n| *lock(&seen) = n));
        for i in 1..=3 {
            let a = go(&g);
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
    fn a_one_shot_gate_serving_its_peer_takes_no_other_code() {
        let g = Gate::new(code(), GatePolicy::OneShot(1));
        let ended = Arc::new(Mutex::new(false));
        let seen = ended.clone();
        g.on_exhausted(Box::new(move |_| *lock(&seen) = true));
        let a = go(&g);
        let serving = a.confirmed();
        // A second dialer with the code (or a guesser) waits, and nothing
        // counts against the budget.
        assert!(matches!(g.reserve(), Verdict::Wait(_)));
        assert!(matches!(g.reserve(), Verdict::Wait(_)));
        assert!(!*lock(&ended));
        assert_eq!(g.failures(), 0);
        // Its transfer was refused and the listener goes on: the code is
        // good again.
        drop(serving);
        assert!(matches!(g.reserve(), Verdict::Go(_)));
    }

    #[test]
    fn a_kept_open_gate_counts_attempts_in_flight_then_delays_and_serializes() {
        let g = Gate::new(code(), GatePolicy::KeepOpen(3));
        // Before any failure, attempts run side by side, each counting
        // against the budget while in flight.
        let (a, b, c) = (go(&g), go(&g), go(&g));
        assert!(matches!(g.reserve(), Verdict::Closed), "three in flight");
        drop((b.confirmed(), c.confirmed()));
        drop(a);
        // A failure: the next attempt waits its delay.
        assert!(matches!(g.reserve(), Verdict::Wait(d) if d >= Duration::from_secs(1)));
        // After a success cleared the delay, one attempt at a time.
        lock(&g.0.state).not_before = None;
        let _d = go(&g);
        assert!(matches!(g.reserve(), Verdict::Wait(_)), "one at a time");
    }

    #[test]
    fn a_fixed_codes_failures_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::fixed(code(), GatePolicy::OneShot(2), dir.path().into()).unwrap();
        let a = go(&g);
        drop(a);
        let g = Gate::fixed(code(), GatePolicy::OneShot(2), dir.path().into()).unwrap();
        assert_eq!(g.failures(), 1);
        let a = go(&g);
        drop(a);
        let e = Gate::fixed(code(), GatePolicy::OneShot(2), dir.path().into()).unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::CodeAttempts, "{e}");
        // Another code has its own count.
        let other = Code::parse("zoom zone zero").unwrap();
        assert!(Gate::fixed(other, GatePolicy::OneShot(2), dir.path().into()).is_ok());
    }
}
