//! A single-threaded one-shot channel: how the connection task hands a request's outcome
//! (PUBACK, SUBACK, a lost connection) to the future that waits for it. Everything runs on one
//! glommio executor, so an `Rc<RefCell<_>>` slot and a waker are all it takes.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::error::ClientError;

struct Slot<T> {
    value: Option<Result<T, ClientError>>,
    waker: Option<Waker>,
}

/// The sending half. Dropping it unsent resolves the receiver with `Disconnected`, so a
/// waiter can never hang on a request the client forgot.
pub(crate) struct Sender<T>(Option<Rc<RefCell<Slot<T>>>>);

pub(crate) struct Receiver<T>(Rc<RefCell<Slot<T>>>);

pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
    }));
    (Sender(Some(slot.clone())), Receiver(slot))
}

impl<T> Sender<T> {
    pub fn send(mut self, value: Result<T, ClientError>) {
        if let Some(slot) = self.0.take() {
            fill(&slot, value);
        }
    }
}

fn fill<T>(slot: &RefCell<Slot<T>>, value: Result<T, ClientError>) {
    let waker = {
        let mut s = slot.borrow_mut();
        s.value = Some(value);
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            fill(&slot, Err(ClientError::Disconnected));
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.borrow_mut();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                match &s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => s.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn delivers_the_value_or_disconnected_when_dropped() {
        let (tx, rx) = oneshot::<u8>();
        tx.send(Ok(7));
        assert_eq!(block_on(rx).unwrap(), 7);
        let (tx, rx) = oneshot::<u8>();
        drop(tx);
        assert!(matches!(block_on(rx), Err(ClientError::Disconnected)));
    }
}
