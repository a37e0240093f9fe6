//! Opening a whole history ([`SessionCrypt::open_all`]): a long one on several threads, a
//! short one, or the part no thread could be started for, on the caller's.

use std::thread::{Builder, ScopedJoinHandle};

use fusion_core::{ChatMessage, Result};

use super::SessionCrypt;

/// Loads shorter than this decrypt on the caller's thread: about 1 ms of work on one core,
/// which a thread's start (tens of microseconds) and the join would not repay by much.
const PARALLEL_FROM: usize = 1024;

/// How many threads decrypt a load of `len` messages: one per core the process may use,
/// at most one per [`PARALLEL_FROM`] messages, and 1 below it.
fn threads_for(len: usize) -> usize {
    if len < PARALLEL_FROM {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(len / PARALLEL_FROM).max(1)
}

/// A run of messages of a long load: opened on a thread of its own, or, when no thread
/// could be started for it, left to the caller's thread.
enum Run<'scope, 'env> {
    Thread(ScopedJoinHandle<'scope, Result<Vec<ChatMessage>>>),
    Here(usize, &'env [ChatMessage]),
}

impl SessionCrypt<'_> {
    /// Every message of `stored`, decrypted. A long history is split into one run of
    /// messages per core ([`threads_for`]), each decrypted on a thread of its own with the
    /// session's ciphers (derived once: the codec caches them), and joined in order; the
    /// error reported is the one of the earliest message that fails, as when decrypting
    /// in one pass. The threads only read the stored messages, which this thread frees:
    /// memory freed on a thread other than the one that allocated it makes the two
    /// contend for the allocator's lock.
    ///
    /// A thread the operating system refuses (a process or user at its limit of threads)
    /// costs time, not the load: that run and every later one are opened on this thread.
    pub(crate) fn open_all(&mut self, stored: Vec<ChatMessage>) -> Result<Vec<ChatMessage>> {
        let threads = threads_for(stored.len());
        if threads <= 1 {
            return stored
                .into_iter()
                .enumerate()
                .map(|(index, m)| self.open(index, m))
                .collect();
        }
        let run = stored.len().div_ceil(threads);
        let (codec, backend, session_id) = (self.codec, self.backend, self.session_id);
        std::thread::scope(|scope| {
            let mut runs = stored.chunks(run).enumerate();
            let (_, first) = runs.next().expect("at least two runs");
            let mut refused = false;
            let others: Vec<Run> = runs
                .map(|(i, messages)| {
                    let start = i * run;
                    if refused {
                        return Run::Here(start, messages);
                    }
                    // `Scope::spawn` panics when the thread cannot be made; this reports it.
                    let open = move || {
                        SessionCrypt::new(codec, backend, session_id).open_run(start, messages)
                    };
                    match Builder::new().spawn_scoped(scope, open) {
                        Ok(handle) => Run::Thread(handle),
                        Err(err) => {
                            // Later spawns would most likely be refused as well.
                            refused = true;
                            tracing::debug!(
                                error = %err,
                                "no thread to decrypt part of a long load; decrypting it on \
                                 the caller's thread"
                            );
                            Run::Here(start, messages)
                        }
                    }
                })
                .collect();
            let mut opened = self.open_run(0, first)?;
            opened.reserve(stored.len() - opened.len());
            for other in others {
                let run = match other {
                    Run::Thread(handle) => handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    Run::Here(start, messages) => self.open_run(start, messages),
                };
                opened.extend(run?);
            }
            Ok(opened)
        })
    }
}
