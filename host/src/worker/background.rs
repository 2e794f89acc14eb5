//! One thread for the work a swap moves off the partitions' path: making
//! the next version's instance (and calling its `init`) and dropping
//! retired instances.
//!
//! These were tasks on the runtime's blocking pool. Handing one over could
//! start a thread there (a stack to map, a clone): timestamps inside the
//! swap caught hand-overs of up to 2.5 ms on the partition's path when
//! four partitions swapped at once, while four instantiations and four
//! unmappings ran side by side on a 2-core machine. A send to one
//! long-lived thread maps nothing, and its jobs run one at a time.
//! The price of one thread: an `init` that waits (on HTTP, or until its
//! CPU limit) delays the other partitions' swaps behind it, never their
//! batches — each goes on with its running version meanwhile.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

use tracing::error;

type Job = Box<dyn FnOnce() + Send>;

static JOBS: OnceLock<Sender<Job>> = OnceLock::new();

/// Runs `job` on the background thread, after the jobs sent before it. A
/// job that cannot run (no thread) is dropped unrun: whatever waits on it
/// sees its sender gone.
pub(super) fn run(job: impl FnOnce() + Send + 'static) {
    let jobs = JOBS.get_or_init(|| {
        let (jobs, queue) = channel::<Job>();
        let started = std::thread::Builder::new()
            .name("lc-background".into())
            .spawn(move || {
                for job in queue {
                    // A job that panics ends alone; its waiter sees its
                    // sender dropped.
                    if catch_unwind(AssertUnwindSafe(job)).is_err() {
                        error!("a background job panicked");
                    }
                }
            });
        if let Err(e) = started {
            error!("cannot start the background thread: {e}");
        }
        jobs
    });
    let _ = jobs.send(Box::new(job));
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::run;

    #[test]
    fn a_panicking_job_does_not_stop_the_jobs_after_it() {
        let (done, finished) = channel();
        run(|| panic!("a job that fails"));
        for i in 0..3 {
            let done = done.clone();
            run(move || done.send(i).unwrap());
        }
        let order: Vec<i32> = (0..3)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, [0, 1, 2], "jobs run in the order they were sent");
    }
}
