//! The read side of the SQLite store: a fixed set of threads, each owning one read-only
//! connection for the life of the store, fed from one queue.
//!
//! Reads were `spawn_blocking` tasks taking a pooled connection. Even with the number of reads
//! bounded, the runtime's blocking pool started a new thread whenever a read arrived before the
//! last one's thread was idle again: a burst (a quota window sliding past an hour of backlog)
//! left 20–37 threads, each with its own allocator arena, and the connections' page caches
//! allocated in whichever thread read last. Here the threads are the pool: `size` threads,
//! always the same ones, each with its own connection and cache.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::schema::open_reader;
use crate::StoreError;

/// One read, run on a reader thread's connection.
type Job = Box<dyn FnOnce(&Connection) + Send>;

/// `size` reader threads; dropping the pool ends them once the queued reads are done.
pub(crate) struct ReaderPool {
    jobs: Sender<Job>,
}

impl ReaderPool {
    /// Open `size` connections to `path` now (so that a bad path fails at start) and start one
    /// thread per connection.
    pub(crate) fn new(path: &Path, size: usize) -> Result<Self, StoreError> {
        let connections = (0..size.max(1))
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for (n, conn) in connections.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("fg-sqlite-read-{n}"))
                .spawn(move || serve_reads(&conn, &queue))
                .map_err(|e| StoreError::Database(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Run `f` on the next free reader thread's connection and wait (asynchronously) for it.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have stopped waiting; nothing is owed to it then.
            let _ = answer.send(f(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Database("the reader threads have stopped".to_owned()))?;
        answered
            .await
            .map_err(|_| StoreError::Database("a read failed without an answer".to_owned()))?
    }
}

/// A reader thread: take the next read from the shared queue, run it, until the pool is dropped.
fn serve_reads(conn: &Connection, queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, so idle threads queue on it
        // and a job goes to exactly one of them.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        // A read that panics answers nobody (its caller sees the dropped answer) and must not
        // take the thread, and with it a connection, out of the pool.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
            tracing::error!("a read on the SQLite store panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn pool(size: usize) -> (tempfile::TempDir, Arc<ReaderPool>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.db");
        drop(super::super::schema::open_writer(&path).unwrap());
        let pool = Arc::new(ReaderPool::new(&path, size).unwrap());
        (dir, pool)
    }

    /// A burst of reads waits for the pool's connections instead of opening one connection (and
    /// one blocking thread, with its page cache) per read: the soak bench saw 470 threads and
    /// 210 open database files, RSS 60 → 275 MiB, when the delivery workers read at once.
    /// And every read runs on one of the pool's own threads: bursts that came in while the last
    /// read's thread was not yet idle again had grown the runtime's blocking pool to 20–37
    /// threads at the soak's quota-window boundaries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reads_runs_on_the_pools_threads_never_more_at_once() {
        let (_dir, pool) = pool(3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(BTreeSet::new()));
        for _round in 0..5 {
            let reads = (0..40).map(|_| {
                let (pool, running, most, threads) = (
                    Arc::clone(&pool),
                    Arc::clone(&running),
                    Arc::clone(&most),
                    Arc::clone(&threads),
                );
                tokio::spawn(async move {
                    pool.run(move |c| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        threads
                            .lock()
                            .unwrap()
                            .insert(format!("{:?}", std::thread::current().id()));
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        let n: i64 =
                            c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(n)
                    })
                    .await
                })
            });
            for read in reads.collect::<Vec<_>>() {
                assert_eq!(read.await.unwrap().unwrap(), 0);
            }
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 3, "{most} reads ran at once");
        let threads = threads.lock().unwrap().len();
        assert!(threads <= 3, "200 reads ran on {threads} threads");
    }

    /// A read that panics fails alone: its caller gets an error and the pool keeps its threads.
    #[tokio::test]
    async fn a_panicking_read_fails_alone_and_the_pool_still_serves() {
        let (_dir, pool) = pool(1);
        let failed = pool
            .run(|_| -> Result<(), StoreError> { panic!("a bug in a query") })
            .await;
        assert!(failed.is_err());
        let n: i64 = pool
            .run(|c| Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
