//! The one meeting point of the shards when the broker stops: each shard arrives once it has
//! nothing left that another shard must help with, and goes on (to its final sync and exit)
//! once every serving shard has arrived. Until then it keeps serving the other shards (its
//! inbox, its confirmations), which is what those still finishing wait for.
//!
//! Why: with `--data-dir`, a member session that ended hands its shared messages to members on
//! other shards, and its own shard forgets them (journals the end) only once their shards
//! confirm the messages durable (see `durability`). A shard that stopped without waiting for
//! those confirmations kept the messages in its log, and the next start delivered them twice:
//! from the session that no longer existed and from the member that took them.
//!
//! Only shards that began serving take part ([`StopBarrier::join`], before the broker reports
//! started), so a shard that failed at start is not waited for. The wait is bounded: a shard
//! that cannot finish (its disk failing) does not hold the stop forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often a waiting shard looks again; the wait only happens once, at a stop.
const LOOK_EVERY: Duration = Duration::from_millis(1);

#[derive(Default)]
pub struct StopBarrier {
    joined: AtomicUsize,
    arrived: AtomicUsize,
}

impl StopBarrier {
    /// A shard that began serving takes part.
    pub fn join(&self) {
        self.joined.fetch_add(1, Ordering::SeqCst);
    }

    /// Arrives, then waits (serving meanwhile: this only sleeps on the executor) until every
    /// shard that joined has arrived, or `limit` passed. Whether all arrived.
    pub async fn arrive_and_wait(&self, limit: Duration) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        loop {
            if self.arrived.load(Ordering::SeqCst) >= self.joined.load(Ordering::SeqCst) {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            glommio::timer::sleep(LOOK_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;
    use std::sync::Arc;

    fn on_executor<F, Fut>(f: F) -> std::thread::JoinHandle<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let ex = LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor starts");
        std::thread::spawn(move || ex.join().expect("executor ends"))
    }

    #[test]
    fn nobody_goes_on_before_the_last_shard_arrives() {
        let barrier = Arc::new(StopBarrier::default());
        barrier.join();
        barrier.join();
        let early = barrier.clone();
        let waited = Arc::new(std::sync::Mutex::new(None));
        let w = waited.clone();
        let first = on_executor(move || async move {
            assert!(early.arrive_and_wait(Duration::from_secs(10)).await);
            *w.lock().unwrap() = Some(Instant::now());
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(waited.lock().unwrap().is_none(), "went on alone");
        // When it went on is compared with when the last one came, not with when it began
        // waiting: its executor may take a while to start.
        let late_at = Instant::now();
        let late = barrier.clone();
        on_executor(move || async move {
            assert!(late.arrive_and_wait(Duration::from_secs(10)).await);
        })
        .join()
        .unwrap();
        first.join().unwrap();
        assert!(waited.lock().unwrap().unwrap() >= late_at, "went on alone");
    }

    #[test]
    fn a_shard_that_never_arrives_holds_the_others_only_so_long() {
        let barrier = Arc::new(StopBarrier::default());
        barrier.join();
        barrier.join();
        let b = barrier.clone();
        on_executor(move || async move {
            let start = Instant::now();
            assert!(!b.arrive_and_wait(Duration::from_millis(50)).await);
            assert!(start.elapsed() >= Duration::from_millis(50));
        })
        .join()
        .unwrap();
    }
}
