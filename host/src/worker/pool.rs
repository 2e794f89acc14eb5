//! The worker pool: a few threads that poll every owned partition's worker
//! task, so a thousand partitions cost a thousand small tasks, not a
//! thousand threads.
//!
//! It is not a tokio runtime on purpose. A handler's WASI calls (its stdout,
//! its clock) go through wasmtime-wasi's synchronous bindings, which
//! `block_on` a tokio runtime — and a thread that is running a tokio
//! runtime may not. Pool threads only *enter* the host runtime's handle:
//! timers, channels and the `block_on` inside WASI calls all work there.
//!
//! Scheduling is first come, first served: a task woken goes to the back of
//! one queue; a worker yields after each batch, so busy partitions take
//! turns and an idle one costs nothing until its records arrive.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::oneshot;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fixed set of threads polling tasks.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<Arc<Task>>,
    stopping: bool,
}

// A task's life: woken while idle it is queued; a thread runs it; woken
// while running it is queued again when the poll ends.
const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const WOKEN_WHILE_RUNNING: u8 = 3;
const DONE: u8 = 4;

struct Task {
    state: AtomicU8,
    /// Only the thread that moved the state to RUNNING touches it.
    future: Mutex<Option<BoxFuture>>,
    /// Told `true` when the future finished, `false` when it panicked.
    finished: Mutex<Option<oneshot::Sender<bool>>>,
    shared: Arc<Shared>,
}

impl Task {
    fn enqueue(self: Arc<Self>) {
        let shared = self.shared.clone();
        shared
            .queue
            .lock()
            .expect("pool queue")
            .tasks
            .push_back(self);
        shared.ready.notify_one();
    }

    fn finish(&self, ok: bool) {
        self.state.store(DONE, Ordering::Release);
        *self.future.lock().expect("pool task") = None;
        if let Some(tell) = self.finished.lock().expect("pool task").take() {
            let _ = tell.send(ok);
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => WOKEN_WHILE_RUNNING,
                _ => return,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == QUEUED => return self.clone().enqueue(),
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }
}

/// Resolves when a spawned task ends: `Ok` when it finished, `Err` when it
/// panicked (or the pool stopped before it finished).
pub struct JoinHandle(oneshot::Receiver<bool>);

impl Future for JoinHandle {
    type Output = Result<(), &'static str>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(true) => Ok(()),
            Ok(false) => Err("the task panicked"),
            Err(_) => Err("the pool stopped before the task finished"),
        })
    }
}

impl Pool {
    /// Starts `threads` threads, each inside `handle`'s context.
    pub fn start(threads: usize, handle: tokio::runtime::Handle) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared::default());
        let threads = (0..threads.max(1))
            .map(|i| {
                let (shared, handle) = (shared.clone(), handle.clone());
                std::thread::Builder::new()
                    .name(format!("lc-worker-{i}"))
                    .spawn(move || {
                        let _context = handle.enter();
                        run(&shared);
                    })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Pool { shared, threads })
    }

    /// Runs `future` on the pool.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) -> JoinHandle {
        let (tell, told) = oneshot::channel();
        let task = Arc::new(Task {
            state: AtomicU8::new(QUEUED),
            future: Mutex::new(Some(Box::pin(future))),
            finished: Mutex::new(Some(tell)),
            shared: self.shared.clone(),
        });
        task.enqueue();
        JoinHandle(told)
    }
}

impl Drop for Pool {
    /// Stops the threads once the queue is empty; tasks still pending are
    /// dropped.
    fn drop(&mut self) {
        self.shared.queue.lock().expect("pool queue").stopping = true;
        self.shared.ready.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let task = {
            let mut queue = shared.queue.lock().expect("pool queue");
            loop {
                if let Some(task) = queue.tasks.pop_front() {
                    break task;
                }
                if queue.stopping {
                    return;
                }
                queue = shared.ready.wait(queue).expect("pool queue");
            }
        };
        poll(task);
    }
}

fn poll(task: Arc<Task>) {
    task.state.store(RUNNING, Ordering::Release);
    let waker = Waker::from(task.clone());
    let mut cx = Context::from_waker(&waker);
    let polled = {
        let mut future = task.future.lock().expect("pool task");
        let Some(f) = future.as_mut() else { return };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(&mut cx)))
    };
    match polled {
        Ok(Poll::Ready(())) => task.finish(true),
        Err(_) => {
            tracing::error!("a partition worker panicked");
            task.finish(false);
        }
        Ok(Poll::Pending) => {
            if task
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Woken during the poll: to the back of the queue.
                task.state.store(QUEUED, Ordering::Release);
                task.enqueue();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn many_tasks_share_few_threads_and_take_turns() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = Pool::start(2, rt.handle().clone()).unwrap();
        // 500 tasks that each wait on a timer and a channel 10 times: with
        // a thread per task this would need 500 threads.
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, _) = tokio::sync::broadcast::channel::<u32>(16);
        let handles: Vec<JoinHandle> = (0..500)
            .map(|_| {
                let (done, mut rx) = (done.clone(), tx.subscribe());
                pool.spawn(async move {
                    for _ in 0..10 {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        tokio::task::yield_now().await;
                    }
                    let _ = rx.recv().await;
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(done.load(Ordering::Relaxed), 0, "all wait for the message");
        tx.send(1).unwrap();
        rt.block_on(async {
            for h in handles {
                h.await.unwrap();
            }
        });
        assert_eq!(done.load(Ordering::Relaxed), 500);
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_goes_on() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = Pool::start(1, rt.handle().clone()).unwrap();
        let bad = pool.spawn(async { panic!("boom") });
        let good = pool.spawn(async {});
        rt.block_on(async {
            assert_eq!(bad.await, Err("the task panicked"));
            assert_eq!(good.await, Ok(()));
        });
    }

    #[test]
    fn a_task_may_block_on_the_host_runtime_inside_a_poll() {
        // What wasmtime-wasi's sync bindings do inside a handler call.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = Pool::start(1, rt.handle().clone()).unwrap();
        let answer = Arc::new(AtomicUsize::new(0));
        let a = answer.clone();
        let h = pool.spawn(async move {
            let handle = tokio::runtime::Handle::current();
            let n = handle.block_on(async { 42 });
            a.store(n, Ordering::Relaxed);
        });
        rt.block_on(h).unwrap();
        assert_eq!(answer.load(Ordering::Relaxed), 42);
    }
}
