//! Dynamic batching. Requests go into a bounded queue; one dedicated
//! inference thread (off the async runtime) owns the model, merges queued
//! requests into batches of at most `max_batch_size` items, waiting up to
//! `max_delay` for more once a batch has started (but only for as many as
//! recent batches had: see `RecentDemand`), runs the model and answers each
//! request. A full queue refuses new work at once (HTTP 429) instead of
//! growing without bound.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Item, ItemOutput, Model};

/// Batching limits (`--max-batch-size`, `--max-delay-ms`, `--queue-capacity`).
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
}

type Reply = oneshot::Sender<Result<Vec<ItemOutput>>>;

struct Job {
    items: Vec<Item>,
    reply: Reply,
}

/// The handle request handlers use to submit work. Cloning is cheap; the
/// inference thread stops once every handle is dropped and the queue drained.
#[derive(Debug, Clone)]
pub struct Batcher {
    queue: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    /// Requests submitted so far (not chunks): what [`RecentDemand`] counts.
    submitted: Arc<AtomicUsize>,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("items", &self.items.len()).finish()
    }
}

impl Batcher {
    /// Starts the inference thread. `load` runs on that thread (the model's
    /// tensors stay where they were created); its result, after a warm-up
    /// batch, is sent to `loaded` and decides whether the server turns ready.
    pub fn start<T: Send + 'static>(
        policy: BatchPolicy,
        metrics: Arc<Metrics>,
        load: impl FnOnce() -> Result<(Model, T)> + Send + 'static,
        loaded: oneshot::Sender<Result<T>>,
    ) -> Result<(Self, std::thread::JoinHandle<()>)> {
        if policy.max_batch_size == 0 || policy.queue_capacity == 0 {
            return Err(Error::Config("max batch size and queue capacity must be at least 1".into()));
        }
        let (queue, jobs) = sync_channel(policy.queue_capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let submitted = Arc::new(AtomicUsize::new(0));
        let worker = InferenceWorker {
            jobs,
            depth: depth.clone(),
            submitted: submitted.clone(),
            policy,
            metrics: metrics.clone(),
        };
        let thread = std::thread::Builder::new().name("ember-inference".into()).spawn(move || {
            let model = match load_and_warm_up(load) {
                Ok((model, info)) => {
                    let _ = loaded.send(Ok(info));
                    model
                }
                Err(error) => {
                    let _ = loaded.send(Err(error));
                    return;
                }
            };
            worker.run(&model);
        })?;
        Ok((Self { queue, depth, submitted, policy, metrics }, thread))
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Queues `items` (split into chunks of at most `max_batch_size`) and
    /// waits for their outputs, in order.
    pub async fn submit(&self, items: Vec<Item>) -> Result<Vec<ItemOutput>> {
        if items.is_empty() {
            return Err(Error::BadRequest("the batch is empty".into()));
        }
        let chunks: Vec<Vec<Item>> = items.chunks(self.policy.max_batch_size).map(<[Item]>::to_vec).collect();
        // All or nothing: do not start half a request the queue cannot take.
        let capacity = self.policy.queue_capacity;
        let depth = self.depth.load(Ordering::Acquire);
        if depth + chunks.len() > capacity {
            return Err(self.shed());
        }
        // Counted before any chunk is queued, so the inference thread never
        // mistakes a big request's later chunks for a request that arrived
        // while it ran the first.
        self.submitted.fetch_add(1, Ordering::AcqRel);
        let mut replies = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (reply, answer) = oneshot::channel();
            self.depth.fetch_add(1, Ordering::AcqRel);
            match self.queue.try_send(Job { items: chunk, reply }) {
                Ok(()) => replies.push(answer),
                Err(TrySendError::Full(_)) => {
                    self.depth.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.shed());
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.depth.fetch_sub(1, Ordering::AcqRel);
                    return Err(Error::NotReady);
                }
            }
        }
        self.metrics.set_queue_depth(self.depth.load(Ordering::Acquire));
        let mut outputs = Vec::new();
        for answer in replies {
            let chunk = answer
                .await
                .map_err(|_| Error::Inference("the inference thread stopped before answering".into()))??;
            outputs.extend(chunk);
        }
        Ok(outputs)
    }

    fn shed(&self) -> Error {
        self.metrics.count_shed();
        Error::QueueFull { capacity: self.policy.queue_capacity }
    }
}

fn load_and_warm_up<T>(load: impl FnOnce() -> Result<(Model, T)>) -> Result<(Model, T)> {
    let (model, info) = catch_panics(load)?;
    let warmup = model.warmup_item();
    let started = Instant::now();
    catch_panics(|| model.infer(vec![warmup]))?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "model warmed up");
    Ok((model, info))
}

/// Turns a panic inside Burn (e.g. an unexpected shape) into an error for
/// the requests involved instead of killing the inference thread.
fn catch_panics<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "model panicked".to_owned());
        Err(Error::Inference(message))
    })
}

/// How many requests the next batch may wait for: the largest demand of
/// the last few batches, a batch's demand being the requests it carried
/// plus those that arrived while it ran.
///
/// Waiting `max_delay` for company only pays when requests come in
/// together, and only until they are all in:
/// - a lone client sending one request at a time (demand 1) would pay the
///   whole delay on every request (2 ms of a 5 ms sentence), so it waits for
///   nobody;
/// - clients that send their next request as soon as they are answered
///   (demand N) are all back a fraction of a millisecond after their batch,
///   and the rest of the delay would be idle time on every batch, so the
///   wait ends once N requests are in;
/// - requests that arrive independently of the answers still get the whole
///   delay while the recent demand is above what has arrived.
///
/// Counting what arrived during the run keeps a group together: if some
/// clients miss a batch, they queue up while it runs, and the next batch
/// waits for the whole group again instead of the group splitting in two
/// for good. The few batches of memory make a single late batch no reason
/// to stop waiting, and a group that shrinks is forgotten after them.
#[derive(Debug, Default)]
struct RecentDemand {
    last: [usize; RecentDemand::BATCHES],
    next: usize,
}

impl RecentDemand {
    const BATCHES: usize = 4;

    fn record(&mut self, requests: usize) {
        self.last[self.next] = requests;
        self.next = (self.next + 1) % Self::BATCHES;
    }

    /// 0 before the first batch: the first request waits for nobody.
    fn expected(&self) -> usize {
        self.last.iter().copied().max().unwrap_or(0)
    }
}

struct InferenceWorker {
    jobs: Receiver<Job>,
    depth: Arc<AtomicUsize>,
    submitted: Arc<AtomicUsize>,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
}

impl InferenceWorker {
    fn run(self, model: &Model) {
        let mut held_over: Option<Job> = None;
        let mut demand = RecentDemand::default();
        loop {
            let first = match held_over.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => self.dequeued(job),
                    // Every Batcher handle is gone: the server has shut down.
                    Err(_) => return,
                },
            };
            let (batch, next) = self.fill_batch(first, self.policy.max_delay, demand.expected());
            held_over = next;
            let requests = batch.len();
            let arrived = self.run_batch(model, batch);
            demand.record(requests + arrived);
        }
    }

    fn dequeued(&self, job: Job) -> Job {
        let depth = self.depth.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.metrics.set_queue_depth(depth);
        job
    }

    /// Adds queued jobs to `first` until the batch is full, `delay` is
    /// over or the queue is empty once the batch holds `expected` requests
    /// (what is already queued is always taken). A job that would overflow
    /// the batch is returned to start the next one (jobs are never split
    /// here, so each is answered by exactly one model call).
    fn fill_batch(&self, first: Job, delay: Duration, expected: usize) -> (Vec<Job>, Option<Job>) {
        let deadline = Instant::now() + delay;
        let mut size = first.items.len();
        let mut batch = vec![first];
        while size < self.policy.max_batch_size {
            let remaining = if batch.len() >= expected {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let next = if remaining.is_zero() {
                self.jobs.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                self.jobs.recv_timeout(remaining)
            };
            let Ok(job) = next else { break };
            let job = self.dequeued(job);
            if size + job.items.len() > self.policy.max_batch_size {
                return (batch, Some(job));
            }
            size += job.items.len();
            batch.push(job);
        }
        (batch, None)
    }

    /// Runs the model on the batch and answers its requests; returns how
    /// many requests were submitted while the model ran. Those would have
    /// ridden in this batch had they been a little quicker; jobs queued
    /// before it (a big request's further chunks, a full batch's overflow)
    /// are not company to wait for, they are taken at once anyway. Counted
    /// before the answers go out, so no answered client's next request is
    /// among them.
    fn run_batch(&self, model: &Model, batch: Vec<Job>) -> usize {
        // Clients that gave up (timeout, disconnect) do not cost model time.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if batch.is_empty() {
            return 0;
        }
        let sizes: Vec<usize> = batch.iter().map(|j| j.items.len()).collect();
        let mut replies = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(sizes.iter().sum());
        for job in batch {
            items.extend(job.items);
            replies.push(job.reply);
        }
        let total = items.len();
        let submitted_before = self.submitted.load(Ordering::Acquire);
        let started = Instant::now();
        let result = catch_panics(|| model.infer(items));
        self.metrics.observe_batch(total, started.elapsed().as_secs_f64());
        let arrived = self.submitted.load(Ordering::Acquire).wrapping_sub(submitted_before);
        match result {
            Ok(outputs) if outputs.len() == total => {
                let mut outputs = outputs.into_iter();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Ok(outputs.by_ref().take(size).collect()));
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(Error::Inference("output count mismatch".into())));
                }
            }
            Err(error) => {
                tracing::error!(%error, items = total, "batch failed");
                let message = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(Error::Inference(message.clone())));
                }
            }
        }
        arrived
    }
}

#[cfg(test)]
mod tests {
    use super::RecentDemand;

    #[test]
    fn nobody_is_expected_before_the_first_batch() {
        assert_eq!(RecentDemand::default().expected(), 0);
    }

    #[test]
    fn the_largest_recent_demand_is_expected() {
        let mut demand = RecentDemand::default();
        for requests in [16, 15, 16, 3] {
            demand.record(requests);
        }
        assert_eq!(demand.expected(), 16);
    }

    #[test]
    fn a_group_that_shrank_is_forgotten_after_a_few_batches() {
        let mut demand = RecentDemand::default();
        demand.record(16);
        for _ in 1..RecentDemand::BATCHES {
            demand.record(1);
        }
        assert_eq!(demand.expected(), 16, "still within memory");
        demand.record(1);
        assert_eq!(demand.expected(), 1);
    }
}
