//! The one thread that holds the session (the database connection, the
//! configuration, who acts). The tools' database calls block, and the
//! PostgreSQL and MySQL drivers drive a runtime of their own, so the web
//! server's runtime never calls them: each page hands the worker a closure
//! and awaits its answer. Pages are read one after another, each a few
//! queries that filter, count and page in SQL.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::cli::{GlobalArgs, Session};

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A handle on the worker thread; cloned into every request.
#[derive(Clone)]
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Open the session the options name on a thread of its own (the
    /// history names the tool `web`).
    pub fn start(global: &GlobalArgs) -> anyhow::Result<Worker> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let global = global.clone();
        std::thread::Builder::new()
            .name("offload-web-db".into())
            .spawn(move || {
                let mut session = match Session::open("web", &global) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    job(&mut session);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the database thread ended before it opened"))??;
        Ok(Worker { jobs })
    }

    /// Run `f` with the session on the worker thread and wait for it.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .map_err(|_| anyhow::anyhow!("the database thread has ended"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the database thread ended during the request"))
    }
}
