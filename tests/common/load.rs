//! A bounded background HTTP load that counts what failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client;

/// Bounded background load; counts failures (non-200 or transport errors).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    pub fn start(url: String, workers: usize, limit: Duration) -> Load {
        Load::start_with_header(url, workers, limit, None)
    }

    /// Like [`Load::start`], every request carrying `header` (e.g. a client address).
    pub fn start_with_header(
        url: String,
        workers: usize,
        limit: Duration,
        header: Option<(&'static str, &'static str)>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (url, stop, ok, failed, errors) = (
                url.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                errors.clone(),
            );
            tasks.spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                    let mut req = c.get(&url);
                    if let Some((k, v)) = header {
                        req = req.header(k, v);
                    }
                    let outcome = match req.send().await {
                        Ok(r) if r.status() == 200 => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    match outcome {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        }
        Load {
            stop,
            ok,
            failed,
            errors,
            tasks,
        }
    }

    /// Stops the load; returns (ok, failed) and prints the first failures.
    pub async fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        for e in self.errors.lock().unwrap().iter().take(5) {
            eprintln!("failed request: {e}");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
