//! The batch-wait policy: after a receive that emptied the kernel's queue,
//! hold the next receive off for a while, so datagrams gather into one
//! fuller batch, as af_packet's block timeout does; meanwhile the caller
//! works through the batch it has. A full batch means more is waiting: no
//! hold-off. Starting the window at the receive, not when the batch runs
//! out, also saves the receive that would only have found the queue empty.

use std::time::{Duration, Instant};

/// How the caller should wait for a source next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wait {
    /// Packets are waiting: call again at once.
    Now,
    /// Sleep on [`crate::Source::wait_fd`] until it is readable.
    OnFd,
    /// Sleep this long without watching the fd (datagrams are gathering).
    For(Duration),
}

/// When the next receive may happen.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    batch_wait: Duration,
    /// While set, receives are held off until then (gathering).
    gather_until: Option<Instant>,
}

impl Pacer {
    /// Holds receives off for `batch_wait` after one that drained the
    /// queue (zero: never).
    pub fn new(batch_wait: Duration) -> Self {
        Pacer {
            batch_wait,
            gather_until: None,
        }
    }

    /// A hold-off is running; clears it once it is over.
    pub fn holding(&mut self) -> bool {
        match self.gather_until {
            Some(until) if Instant::now() < until => true,
            _ => {
                self.gather_until = None;
                false
            }
        }
    }

    /// A receive from the kernel happened; `drained`: it left the queue
    /// empty (a hint from the receiver).
    pub fn received(&mut self, drained: bool) {
        if !self.batch_wait.is_zero() && drained {
            self.gather_until = Instant::now().checked_add(self.batch_wait);
        }
    }

    /// No more hold-offs (the source has stopped).
    pub fn stop(&mut self) {
        self.batch_wait = Duration::ZERO;
        self.gather_until = None;
    }

    /// How to wait, with `pending` datagrams already in user space.
    pub fn wait(&self, pending: bool) -> Wait {
        if pending {
            return Wait::Now;
        }
        match self.gather_until {
            Some(until) => Wait::For(until.saturating_duration_since(Instant::now())),
            None => Wait::OnFd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_draining_receive_starts_a_hold_off() {
        let mut p = Pacer::new(Duration::from_secs(5));
        p.received(false);
        assert!(!p.holding());
        assert_eq!(p.wait(false), Wait::OnFd);
        p.received(true);
        assert!(p.holding());
        assert!(matches!(p.wait(false), Wait::For(d) if d <= Duration::from_secs(5)));
        assert_eq!(p.wait(true), Wait::Now, "work in hand comes first");
        p.stop();
        assert!(!p.holding());
    }

    #[test]
    fn zero_never_holds_off() {
        let mut p = Pacer::new(Duration::ZERO);
        p.received(true);
        assert!(!p.holding());
        assert_eq!(p.wait(false), Wait::OnFd);
    }
}
