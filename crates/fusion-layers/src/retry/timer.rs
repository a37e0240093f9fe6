//! The pauses between attempts, timed by one thread of the layer's own rather than by the
//! async runtime's timer.
//!
//! Why not `tokio::time::sleep`: it panics in a tokio runtime built without
//! `enable_time()`, and outside tokio (another executor, a `block_on` of the futures
//! crate), and tokio has no way to ask whether a timer is there. The layer may be called
//! from any of those, and a storage call must not panic because its backend failed once.
//! Why not a thread per pause: an outage makes every caller retry at once, and a thread
//! each would be thousands of threads exactly when the process is under strain. So one
//! thread, started on the first pause, keeps every pending pause in a heap by deadline and
//! wakes each through a oneshot channel, which any executor can wait on.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A pending pause: when it ends, and the caller waiting for it.
struct Due {
    at: Instant,
    wake: oneshot::Sender<()>,
}

/// Ordered so that the pause that ends first is the top of a (max-)heap.
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

/// The fewest pending pauses at which the timer thread sweeps out abandoned ones.
const MIN_SWEEP: usize = 64;

/// The pending pauses, the one that ends first on top.
///
/// A pause whose caller stopped waiting (its call cancelled by a timeout, a `select!`, a
/// client that went away) is of no use, yet would stay until its deadline: with a long
/// backoff (`RetryLayer::backoff` takes up to `Duration::MAX`, a year here), every call
/// cancelled during an outage would leave one for that long, and the memory would grow
/// with each. So whenever the heap has doubled since it was last swept, the abandoned
/// ones are dropped: a sweep every so many pauses, as many as are live, so each costs
/// O(1) on average and the heap holds at most twice the live pauses (or [`MIN_SWEEP`]).
#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Due>,
    /// How many pauses the last sweep left.
    swept: usize,
}

impl Pending {
    fn push(&mut self, due: Due) {
        self.heap.push(due);
        if self.heap.len() >= 2 * self.swept.max(MIN_SWEEP) {
            self.heap.retain(|due| !due.wake.is_closed());
            self.swept = self.heap.len();
        }
    }

    /// Wakes every pause that has ended by `now`.
    fn wake_due(&mut self, now: Instant) {
        while self.heap.peek().is_some_and(|due| due.at <= now) {
            let due = self.heap.pop().expect("peeked");
            // A caller that stopped waiting (its future dropped) has no receiver left.
            let _ = due.wake.send(());
        }
        // The next sweep comes when the heap has doubled from what is left, not from what
        // the last one left: after a burst of pauses (an outage's) had ended, that would let
        // as many abandoned ones pile up as the burst held, for the rest of the process.
        self.swept = self.swept.min(self.heap.len());
    }
}

/// The way to the timer thread; `None` until the first pause, or after the thread could
/// not be started (the next pause tries again).
static TIMER: Mutex<Option<Sender<Due>>> = Mutex::new(None);

/// Waits `duration` under any executor, or in none. When no timer thread can be started
/// (the process is at its limit of threads) it returns at once: the next attempt then
/// follows without a pause, which costs the backend a faster retry, not the call.
pub(crate) async fn sleep(duration: Duration) {
    let (wake, woken) = oneshot::channel();
    // A pause too long for the clock (`Duration::MAX`) is as good as for ever: a year.
    let now = Instant::now();
    let at = now
        .checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    let due = Due { at, wake };
    if !enqueue(due) {
        return;
    }
    // An error means the timer thread is gone (it does not stop while a pause is queued,
    // short of a panic): stop waiting rather than wait forever.
    let _ = woken.await;
}

/// Hands `due` to the timer thread, starting it if there is none; `false` if none can be
/// started.
fn enqueue(due: Due) -> bool {
    // A panic while the lock was held left nothing half done: the slot is a sender or not.
    let mut timer = TIMER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let due = match timer.as_ref() {
        Some(sender) => match sender.send(due) {
            Ok(()) => return true,
            // The thread is gone; start another for this pause.
            Err(mpsc::SendError(due)) => due,
        },
        None => due,
    };
    let (sender, receiver) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name("fusion-retry-timer".into())
        .spawn(move || run(receiver));
    match started {
        Ok(_) => {
            let sent = sender.send(due).is_ok();
            *timer = Some(sender);
            sent
        }
        Err(err) => {
            tracing::debug!(error = %err, "no thread to time a retry's pause; retrying at once");
            false
        }
    }
}

/// The timer thread: wakes every pause when it ends, and runs for the rest of the process
/// (its sender stays in [`TIMER`]), idle on its channel while no pause is pending.
fn run(requests: Receiver<Due>) {
    let mut pending = Pending::default();
    loop {
        let now = Instant::now();
        pending.wake_due(now);
        let next = match pending.heap.peek() {
            Some(due) => requests.recv_timeout(due.at.saturating_duration_since(now)),
            None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(due) => pending.push(due),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_too_long_for_the_clock_waits_instead_of_panicking() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut pause = std::pin::pin!(sleep(Duration::MAX));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(pause.as_mut().poll(&mut cx), Poll::Pending);
    }

    /// The pauses of calls cancelled while they waited (a year each, a backoff with no
    /// limit) are swept out as more come, not kept until they end; a live one stays.
    #[test]
    fn pauses_nobody_waits_for_are_swept_out() {
        let year = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut pending = Pending::default();
        let (wake, mut live) = oneshot::channel();
        pending.push(Due { at: year, wake });
        for _ in 0..10_000 {
            let (wake, abandoned) = oneshot::channel();
            drop(abandoned);
            pending.push(Due { at: year, wake });
        }
        assert!(
            pending.heap.len() <= 2 * MIN_SWEEP,
            "{}",
            pending.heap.len()
        );
        let kept = pending.heap.pop().expect("the live pause is kept");
        kept.wake.send(()).unwrap();
        assert_eq!(live.try_recv(), Ok(()));
    }

    /// After a burst of live pauses has ended, abandoned ones are swept as soon as they are
    /// twice what is left (at least [`MIN_SWEEP`]), not once they are twice the burst.
    #[test]
    fn abandoned_pauses_after_a_burst_are_swept_as_before_it() {
        let start = Instant::now();
        let mut pending = Pending::default();
        let mut burst = Vec::new();
        for _ in 0..1_000 {
            let (wake, live) = oneshot::channel();
            pending.push(Due { at: start, wake });
            burst.push(live);
        }
        pending.wake_due(start);
        assert!(pending.heap.is_empty());
        assert!(burst.iter_mut().all(|live| live.try_recv() == Ok(())));
        let year = start + Duration::from_secs(365 * 24 * 3600);
        for _ in 0..1_000 {
            let (wake, abandoned) = oneshot::channel();
            drop(abandoned);
            pending.push(Due { at: year, wake });
        }
        assert!(
            pending.heap.len() <= 2 * MIN_SWEEP,
            "{}",
            pending.heap.len()
        );
    }

    #[test]
    fn the_pause_that_ends_first_is_on_top() {
        let start = Instant::now();
        let mut heap = BinaryHeap::new();
        for ms in [30, 10, 20] {
            let (wake, _) = oneshot::channel();
            let at = start + Duration::from_millis(ms);
            heap.push(Due { at, wake });
        }
        let order: Vec<_> = std::iter::from_fn(|| heap.pop().map(|due| due.at - start)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(order, [ms(10), ms(20), ms(30)]);
    }
}
