//! Dynamic batching. Requests go into a bounded queue; one dedicated
//! inference thread (off the async runtime) owns the model, merges queued
//! requests into batches of at most `max_batch_size` items, waiting up to
//! `max_delay` for more once a batch has started, runs the model and answers
//! each request. A full queue refuses new work at once (HTTP 429) instead of
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
        let worker = InferenceWorker { jobs, depth: depth.clone(), policy, metrics: metrics.clone() };
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
        Ok((Self { queue, depth, policy, metrics }, thread))
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

struct InferenceWorker {
    jobs: Receiver<Job>,
    depth: Arc<AtomicUsize>,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
}

impl InferenceWorker {
    fn run(self, model: &Model) {
        let mut held_over: Option<Job> = None;
        // Waiting `max_delay` for company only pays when requests come in
        // together. A lone client sending one request at a time would pay
        // the whole delay on every request (2 ms of a 10 ms sentence), so
        // the wait is skipped after a batch that found no company, and
        // resumes as soon as a batch gathers more than one request (what is
        // already queued is always taken).
        let mut expect_company = false;
        loop {
            let first = match held_over.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => self.dequeued(job),
                    // Every Batcher handle is gone: the server has shut down.
                    Err(_) => return,
                },
            };
            let delay = if expect_company { self.policy.max_delay } else { Duration::ZERO };
            let (batch, next) = self.fill_batch(first, delay);
            held_over = next;
            expect_company = batch.len() > 1 || held_over.is_some();
            self.run_batch(model, batch);
        }
    }

    fn dequeued(&self, job: Job) -> Job {
        let depth = self.depth.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.metrics.set_queue_depth(depth);
        job
    }

    /// Adds queued jobs to `first` until the batch is full, `delay` is
    /// over or the queue is empty. A job that would overflow the batch is
    /// returned to start the next one (jobs are never split here, so each is
    /// answered by exactly one model call).
    fn fill_batch(&self, first: Job, delay: Duration) -> (Vec<Job>, Option<Job>) {
        let deadline = Instant::now() + delay;
        let mut size = first.items.len();
        let mut batch = vec![first];
        while size < self.policy.max_batch_size {
            let remaining = deadline.saturating_duration_since(Instant::now());
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

    fn run_batch(&self, model: &Model, batch: Vec<Job>) {
        // Clients that gave up (timeout, disconnect) do not cost model time.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if batch.is_empty() {
            return;
        }
        let sizes: Vec<usize> = batch.iter().map(|j| j.items.len()).collect();
        let mut replies = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(sizes.iter().sum());
        for job in batch {
            items.extend(job.items);
            replies.push(job.reply);
        }
        let total = items.len();
        let started = Instant::now();
        let result = catch_panics(|| model.infer(items));
        self.metrics.observe_batch(total, started.elapsed().as_secs_f64());
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
    }
}
