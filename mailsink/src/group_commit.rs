//! Group commit: many waiters, one sync.
//!
//! A message may be acknowledged only once the sync that makes it durable has returned
//! (see [`crate::maildir`]). Syncing once per message makes the disk's flushes the limit;
//! here every message that asks while a sync is running, or within a short window after
//! the first one asked, shares the next sync. Each waiter is answered only by a sync that
//! began after it asked, so none is told "durable" by a sync that could not cover it.
//!
//! The syncs run on a thread of their own: a sync blocks, and the waiters are futures.

use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The most waiters one sync answers; more wait for the next. Bounds the latency a batch
/// adds and the memory of one batch (the queue itself is bounded by the connections, each
/// of which waits for at most one message).
pub const MAX_BATCH: usize = 4096;

/// A thread that runs one sync for many waiters, each of which may hand it an item (a
/// journal record) to write before the sync.
#[derive(Debug)]
pub struct GroupCommit<T = ()> {
    queue: Sender<(T, Waiter)>,
}

type Waiter = oneshot::Sender<io::Result<()>>;

impl GroupCommit<()> {
    /// Starts the thread. `sync` makes durable everything done before it is called;
    /// `window` is how long the first waiter of a batch waits for others to join it
    /// (zero: only those that asked while the previous sync ran share the next).
    pub fn start(
        name: &str,
        window: Duration,
        mut sync: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> io::Result<GroupCommit> {
        GroupCommit::start_with(name, window, move |_| sync())
    }

    /// Resolves once a sync that began after this call has returned, with its result.
    pub async fn sync(&self) -> io::Result<()> {
        self.submit(()).await
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the thread. `sync` is given the items of one batch, in the order they were
    /// submitted: it writes them and makes them durable, with everything done before it
    /// was called. `window` as for [`GroupCommit::start`].
    pub fn start_with(
        name: &str,
        window: Duration,
        sync: impl FnMut(Vec<T>) -> io::Result<()> + Send + 'static,
    ) -> io::Result<GroupCommit<T>> {
        let (queue, waiting) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&waiting, window, sync))?;
        Ok(GroupCommit { queue })
    }

    /// Hands `item` to the next sync; resolves once that sync (which began after this
    /// call) has returned, with its result.
    pub async fn submit(&self, item: T) -> io::Result<()> {
        let (done, result) = oneshot::channel();
        self.queue
            .send((item, done))
            .map_err(|_| io::Error::other("the group commit thread has stopped"))?;
        result
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the group commit thread has stopped")))
    }
}

/// The thread's loop: wait for a first waiter, gather the others, sync, answer them all.
/// Ends when the [`GroupCommit`] is dropped.
fn run<T>(
    waiting: &Receiver<(T, Waiter)>,
    window: Duration,
    mut sync: impl FnMut(Vec<T>) -> io::Result<()>,
) {
    while let Ok(first) = waiting.recv() {
        let (items, waiters): (Vec<T>, Vec<Waiter>) =
            gather(waiting, first, window).into_iter().unzip();
        let result = sync(items);
        for waiter in waiters {
            // A waiter that went away (its connection closed) needs no answer.
            let _ = waiter.send(copy(&result));
        }
    }
}

/// `first` and every waiter that arrives within `window` of it, or is already queued, up
/// to [`MAX_BATCH`].
fn gather<T>(
    waiting: &Receiver<(T, Waiter)>,
    first: (T, Waiter),
    window: Duration,
) -> Vec<(T, Waiter)> {
    let mut batch = vec![first];
    let deadline = Instant::now() + window;
    while batch.len() < MAX_BATCH {
        let next = match waiting.try_recv() {
            Ok(waiter) => Ok(waiter),
            Err(_) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => waiting.recv_timeout(left),
                _ => Err(RecvTimeoutError::Timeout),
            },
        };
        match next {
            Ok(waiter) => batch.push(waiter),
            Err(_) => break,
        }
    }
    batch
}

/// One sync's result for each of its waiters (`io::Error` cannot be cloned).
fn copy(result: &io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    /// A sync that blocks until the test lets it return, and records what it was called
    /// after.
    #[derive(Clone, Default)]
    struct Gate {
        state: Arc<(Mutex<GateState>, Condvar)>,
    }

    #[derive(Default)]
    struct GateState {
        started: u64,
        released: u64,
    }

    impl Gate {
        fn sync(&self) -> io::Result<()> {
            let (lock, changed) = &*self.state;
            let mut state = lock.lock().unwrap();
            state.started += 1;
            let me = state.started;
            changed.notify_all();
            while state.released < me {
                state = changed.wait(state).unwrap();
            }
            Ok(())
        }

        fn wait_started(&self, n: u64) {
            let (lock, changed) = &*self.state;
            let mut state = lock.lock().unwrap();
            while state.started < n {
                let (next, timeout) = changed
                    .wait_timeout(state, Duration::from_secs(10))
                    .unwrap();
                assert!(!timeout.timed_out(), "sync {n} never started");
                state = next;
            }
        }

        fn release(&self, n: u64) {
            let (lock, changed) = &*self.state;
            lock.lock().unwrap().released = n;
            changed.notify_all();
        }
    }

    /// Two workers: the test's own thread blocks on the gate while the waiters run.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn no_waiter_is_answered_before_the_sync_that_covers_it_returns() {
        runtime().block_on(async {
            let gate = Gate::default();
            let fake = gate.clone();
            let commit = Arc::new(
                GroupCommit::start("test-commit", Duration::ZERO, move || fake.sync()).unwrap(),
            );
            // The first waiter starts sync 1, which blocks.
            let first = tokio::spawn({
                let commit = commit.clone();
                async move { commit.sync().await }
            });
            gate.wait_started(1);
            // Ten more ask while sync 1 runs: it began before they asked, so it must not
            // answer them; they share sync 2.
            let later: Vec<_> = (0..10)
                .map(|_| {
                    let commit = commit.clone();
                    tokio::spawn(async move { commit.sync().await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!first.is_finished(), "answered before its sync returned");
            gate.release(1);
            first.await.unwrap().unwrap();
            gate.wait_started(2);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                later.iter().all(|w| !w.is_finished()),
                "answered by a sync that began before they asked"
            );
            gate.release(2);
            for waiter in later {
                waiter.await.unwrap().unwrap();
            }
            let (lock, _) = &*gate.state;
            assert_eq!(lock.lock().unwrap().started, 2, "eleven waiters, two syncs");
        });
    }

    #[test]
    fn waiters_within_the_window_share_one_sync_and_a_failure_reaches_each() {
        runtime().block_on(async {
            let calls = Arc::new(AtomicU64::new(0));
            let counted = calls.clone();
            let commit = Arc::new(
                GroupCommit::start("test-commit", Duration::from_millis(200), move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
                })
                .unwrap(),
            );
            let waiters: Vec<_> = (0..20)
                .map(|_| {
                    let commit = commit.clone();
                    tokio::spawn(async move { commit.sync().await })
                })
                .collect();
            for waiter in waiters {
                let err = waiter.await.unwrap().unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::StorageFull);
                assert_eq!(err.to_string(), "disk full");
            }
            assert_eq!(calls.load(Ordering::Relaxed), 1, "twenty waiters, one sync");
        });
    }

    #[test]
    fn each_sync_is_given_the_items_of_its_waiters_in_order_and_only_those() {
        runtime().block_on(async {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            let commit = Arc::new(
                GroupCommit::start_with("test-commit", Duration::from_millis(500), move |items| {
                    record.lock().unwrap().push(items);
                    Ok(())
                })
                .unwrap(),
            );
            // One after another: each waits for its own sync.
            for n in 0..3u32 {
                commit.submit(n).await.unwrap();
            }
            // Together, within the window: one sync for all.
            let together: Vec<_> = (10..15u32)
                .map(|n| {
                    let commit = commit.clone();
                    tokio::spawn(async move { commit.submit(n).await })
                })
                .collect();
            for waiter in together {
                waiter.await.unwrap().unwrap();
            }
            let mut seen = seen.lock().unwrap().clone();
            let last = seen.pop().unwrap();
            assert_eq!(seen, [vec![0], vec![1], vec![2]]);
            let mut last_sorted = last.clone();
            last_sorted.sort();
            assert_eq!(
                last_sorted,
                [10, 11, 12, 13, 14],
                "one sync for the five: {last:?}"
            );
        });
    }
}
