//! `--serial`: handlers one at a time, in the order their senders arrived.
//! A ticket is drawn as the sender is admitted; its handler runs when
//! every earlier ticket is done (or was given up: a failed transfer never
//! holds the queue).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The queue's state: the next ticket to hand out, the one whose turn it
/// is, and tickets given up before their turn.
#[derive(Default)]
struct State {
    next: u64,
    serving: u64,
    gone: BTreeSet<u64>,
}

/// A first-in, first-out queue of tickets.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    turn: Condvar,
}

/// One place in the [`Queue`]; dropping it lets the next one go.
pub(crate) struct Ticket {
    queue: Arc<Queue>,
    n: u64,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next place.
    pub(crate) fn ticket(self: &Arc<Self>) -> Ticket {
        let mut s = self.lock();
        let n = s.next;
        s.next += 1;
        Ticket {
            queue: self.clone(),
            n,
        }
    }
}

impl Ticket {
    /// Whether every earlier ticket is done (it is this one's turn).
    pub(crate) fn is_turn(&self) -> bool {
        self.queue.lock().serving == self.n
    }

    /// Waits until every earlier ticket is done; false if `stop` was set
    /// meanwhile (the receiver is shutting down).
    pub(crate) fn wait_turn(&self, stop: &AtomicBool) -> bool {
        let mut s = self.queue.lock();
        while s.serving != self.n {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            s = match self.queue.turn.wait_timeout(s, Duration::from_millis(200)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.queue.lock();
        if s.serving == self.n {
            s.serving += 1;
            loop {
                let next = s.serving;
                if !s.gone.remove(&next) {
                    break;
                }
                s.serving += 1;
            }
        } else {
            s.gone.insert(self.n);
        }
        drop(s);
        self.queue.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_follow_the_tickets_and_skip_those_given_up() {
        let q = Arc::new(Queue::default());
        let stop = AtomicBool::new(false);
        let order = Arc::new(Mutex::new(Vec::new()));
        let tickets: Vec<Ticket> = (0..5).map(|_| q.ticket()).collect();
        let mut it = tickets.into_iter();
        let t0 = it.next().unwrap();
        let t1 = it.next().unwrap();
        let rest: Vec<Ticket> = it.collect();
        // Ticket 1 gives up before its turn; 2..4 wait in threads started
        // in reverse order, and still run in ticket order.
        drop(t1);
        std::thread::scope(|sc| {
            for t in rest.into_iter().rev() {
                let (order, stop) = (order.clone(), &stop);
                sc.spawn(move || {
                    assert!(t.wait_turn(stop));
                    order.lock().unwrap().push(t.n);
                });
            }
            std::thread::sleep(Duration::from_millis(50));
            assert!(order.lock().unwrap().is_empty(), "nobody before ticket 0");
            assert!(t0.wait_turn(&stop));
            drop(t0);
        });
        assert_eq!(*order.lock().unwrap(), [2, 3, 4]);
        let late = q.ticket();
        assert!(
            late.wait_turn(&stop),
            "a ticket after an empty queue runs at once"
        );
    }

    #[test]
    fn a_shutdown_ends_the_wait() {
        let q = Arc::new(Queue::default());
        let _first = q.ticket();
        let second = q.ticket();
        let stop = AtomicBool::new(true);
        assert!(!second.wait_turn(&stop));
    }
}
