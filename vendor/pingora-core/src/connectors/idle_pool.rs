// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The keep-alive pool of upstream streams, without a task per released stream.
//!
//! A released stream is stored with the time it became idle and its idle deadline; [IdlePool::get]
//! hands out the group's most recently released stream that is still within its deadline. One
//! sweeper task per pool closes, once a second, the streams whose deadline passed or whose server
//! closed them or sent data. The size bound is global across groups: when it is exceeded, the
//! oldest streams are evicted, a batch at a time.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// How often the sweeper looks for streams that timed out or that their server closed.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Group keys are already hashes (`Peer::reuse_hash`): use them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Idle {
    stream: Stream,
    since: Instant,
    deadline: Option<Instant>,
    order: u64,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// Per group, its idle streams, oldest first.
type Groups = HashMap<u64, Vec<Idle>, BuildHasherDefault<KeyHasher>>;

/// The idle upstream streams of a [super::TransportConnector].
pub(crate) struct IdlePool {
    shards: [Mutex<Groups>; SHARDS],
    len: AtomicUsize,
    size: usize,
    order: AtomicU64,
    sweeping: AtomicBool,
    unexpected_data: Arc<AtomicU64>,
    on_evict: Option<PoolCallback>,
}

impl IdlePool {
    pub(crate) fn new(
        size: usize,
        unexpected_data: Arc<AtomicU64>,
        on_evict: Option<PoolCallback>,
    ) -> Self {
        IdlePool {
            shards: std::array::from_fn(|_| Mutex::new(Groups::default())),
            len: AtomicUsize::new(0),
            size,
            order: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            unexpected_data,
            on_evict,
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Groups> {
        &self.shards[(key % SHARDS as u64) as usize]
    }

    /// Idle streams held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Keep `stream` for reuse by its group `key`, for at most `idle_timeout`.
    pub(crate) fn put(self: &Arc<Self>, key: u64, stream: Stream, idle_timeout: Option<Duration>) {
        if self.size == 0 {
            return;
        }
        let since = Instant::now();
        let idle = Idle {
            stream,
            since,
            deadline: idle_timeout.map(|t| since + t),
            order: self.order.fetch_add(1, Ordering::Relaxed),
        };
        self.shard(key).lock().entry(key).or_default().push(idle);
        if self.len.fetch_add(1, Ordering::Relaxed) + 1 > self.size {
            self.evict_oldest();
        }
        if !self.sweeping.load(Ordering::Relaxed) {
            self.start_sweeper();
        }
    }

    /// The most recently released stream of group `key` that is within its idle deadline.
    /// Streams past their deadline met on the way are closed.
    pub(crate) fn get(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut groups = self.shard(key).lock();
        let group = groups.get_mut(&key)?;
        while let Some(idle) = group.pop() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if !idle.expired(now) {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Evict the oldest streams across all groups until the pool is a batch below its size.
    fn evict_oldest(&self) {
        let batch = SHARDS.min(self.size / 4).max(1);
        let target = self.size.saturating_sub(batch);
        let mut shards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let mut evicted = Vec::new();
        while self.len.load(Ordering::Relaxed) > target {
            // each group's oldest stream is its first
            let oldest = shards
                .iter()
                .enumerate()
                .flat_map(|(i, groups)| {
                    groups
                        .iter()
                        .filter_map(move |(key, group)| group.first().map(|g| (g.order, i, *key)))
                })
                .min();
            let Some((_, shard, key)) = oldest else { break };
            if let Some(group) = shards[shard].get_mut(&key) {
                evicted.push(group.remove(0));
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        drop(shards);
        if let Some(callback) = &self.on_evict {
            for idle in &evicted {
                callback(idle.since.elapsed());
            }
        }
    }

    /// Close the streams past their deadline and those whose server closed them or sent data;
    /// forget empty groups. Returns how many streams were closed.
    pub(crate) fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut closed = Vec::new();
        for shard in &self.shards {
            let mut groups = shard.lock();
            groups.retain(|_, group| {
                let mut i = 0;
                while i < group.len() {
                    let idle = &mut group[i];
                    if idle.expired(now)
                        || !test_reusable_stream(&mut idle.stream, &self.unexpected_data)
                    {
                        closed.push(group.remove(i));
                    } else {
                        i += 1;
                    }
                }
                !group.is_empty()
            });
        }
        self.len.fetch_sub(closed.len(), Ordering::Relaxed);
        closed.len()
    }

    /// One sweeper per pool, on the runtime of the first release; it ends with the pool or with
    /// its runtime (the next release then starts another).
    fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let _running = Sweeping(pool.clone());
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(pool) = pool.upgrade() else { break };
                pool.sweep();
            }
        });
    }
}

/// Marks a pool's sweeper as gone when its task ends or is dropped with its runtime.
struct Sweeping(Weak<IdlePool>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sweeping.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let client: crate::protocols::l4::stream::Stream = client.into();
        (Box::new(client), server)
    }

    fn pool(size: usize) -> Arc<IdlePool> {
        Arc::new(IdlePool::new(size, Arc::new(AtomicU64::new(0)), None))
    }

    #[tokio::test]
    async fn reuse_is_most_recent_first_and_by_group() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = pool(8);
        let (a, _sa) = pair(&listener).await;
        let (b, _sb) = pair(&listener).await;
        let (a_id, b_id) = (a.id(), b.id());
        pool.put(1, a, None);
        pool.put(1, b, None);
        assert!(pool.get(2).is_none());
        assert_eq!(pool.get(1).unwrap().id(), b_id);
        assert_eq!(pool.get(1).unwrap().id(), a_id);
        assert!(pool.get(1).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn expired_streams_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = pool(8);
        let (a, _sa) = pair(&listener).await;
        pool.put(1, a, Some(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(pool.get(1).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn the_oldest_streams_are_evicted_beyond_the_size() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let evictions = Arc::new(AtomicUsize::new(0));
        let counted = evictions.clone();
        let callback: PoolCallback = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let pool = Arc::new(IdlePool::new(
            4,
            Arc::new(AtomicU64::new(0)),
            Some(callback),
        ));
        let mut servers = Vec::new();
        let mut ids = Vec::new();
        for key in 0..5u64 {
            let (s, server) = pair(&listener).await;
            ids.push(s.id());
            servers.push(server);
            pool.put(key, s, None);
        }
        // 5 > 4: evicted down to the size less a batch (4 / 4 = 1), oldest first: groups 0 and 1
        assert_eq!(pool.len(), 3);
        assert_eq!(evictions.load(Ordering::Relaxed), 2);
        assert!(pool.get(0).is_none());
        assert!(pool.get(1).is_none());
        assert_eq!(pool.get(4).unwrap().id(), ids[4]);
    }

    #[tokio::test]
    async fn the_sweeper_closes_streams_the_server_closed_or_wrote_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unexpected = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(IdlePool::new(8, unexpected.clone(), None));
        let (a, sa) = pair(&listener).await;
        let (b, mut sb) = pair(&listener).await;
        let (c, _sc) = pair(&listener).await;
        let c_id = c.id();
        pool.put(7, a, None);
        pool.put(7, b, None);
        pool.put(7, c, Some(Duration::from_secs(60)));
        drop(sa);
        sb.write_all(b"surprise").await.unwrap();
        // the sweeper runs every SWEEP_EVERY: wait for it, bounded
        let deadline = Instant::now() + SWEEP_EVERY * 5;
        while pool.len() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.len(), 1);
        assert_eq!(unexpected.load(Ordering::Relaxed), 1);
        assert_eq!(pool.get(7).unwrap().id(), c_id);
    }

    #[tokio::test]
    async fn the_sweeper_ends_with_the_pool() {
        let pool = pool(8);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, _sa) = pair(&listener).await;
        pool.put(1, a, None);
        assert!(pool.sweeping.load(Ordering::Relaxed));
        let weak = Arc::downgrade(&pool);
        drop(pool);
        // the sweeper holds no strong reference between its rounds
        assert!(weak.upgrade().is_none());
    }
}
