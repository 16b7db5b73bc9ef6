//! A bounded queue drained by one named thread — how outputs (relay, webhook, command hook)
//! stay off the verdict path. Offering never waits; dropping the worker finishes what is
//! queued, then joins the thread.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// One thread handling queued items in order.
#[derive(Debug)]
pub struct Worker<T> {
    tx: Option<SyncSender<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts the thread `name`, handling each item with `handle`; at most `capacity` wait.
    pub fn start(
        name: &str,
        capacity: usize,
        mut handle: impl FnMut(T) + Send + 'static,
    ) -> std::io::Result<Worker<T>> {
        let (tx, rx) = sync_channel::<T>(capacity);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for item in rx {
                    handle(item);
                }
            })?;
        Ok(Worker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `item` without waiting; false when the queue is full (the caller logs and counts).
    pub fn offer(&self, item: T) -> bool {
        match &self.tx {
            Some(tx) => !matches!(
                tx.try_send(item),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
            ),
            None => false,
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and end.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn handles_in_order_and_finishes_the_queue_on_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let w =
            Worker::start("test", 8, move |i: u32| s.lock().expect("lock").push(i)).expect("start");
        for i in 0..5 {
            assert!(w.offer(i));
        }
        drop(w);
        assert_eq!(*seen.lock().expect("lock"), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_full_queue_refuses_instead_of_waiting() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate_rx = Mutex::new(gate_rx);
        let w = Worker::start("test", 1, move |_: u32| {
            let _ = gate_rx.lock().expect("lock").recv();
        })
        .expect("start");
        // one item in the handler (blocked), one in the queue; the next is refused
        let accepted = (0..5).filter(|i| w.offer(*i)).count();
        assert!(accepted <= 2, "{accepted}");
        for _ in 0..accepted {
            gate_tx.send(()).expect("release");
        }
        drop(w);
    }
}
