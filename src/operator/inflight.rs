//! The bound on API requests awaiting their response, with two queues: requests that
//! keep the operator leading or start work a user waits on go before the rest.
//!
//! Under a burst (an Invoker's slot creating 1000 children while the first of them already
//! run, each with a Job, a status write and an Event) a first-come queue puts the slot's
//! later creations behind its earlier children's runs, and a Lease renewal behind all of
//! them: a renewal that waits past its deadline stops every controller. So the Lease and
//! the creations of AsyncCommands (a slot's children, a fleet's batches) take the next
//! free slot, and so do a fleet's grants to its batches (without them a batch starts
//! nothing: at 5000 nodes the last of 50 grants waited 3 s behind the first batches'
//! Jobs); the rest wait their turn in order, as before. tower's `ConcurrencyLimit`
//! has one queue; this is it with two.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// A request's `VERB resource` ([`super::request_kind`]), put in its extensions by the
/// layer that counts it, so it is worked out once per request.
#[derive(Clone, Debug)]
pub struct Kind(pub String);

/// Which queue a request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    First,
    Rest,
}

impl Queue {
    /// The queue of a request by its `VERB resource` ([`super::request_kind`]).
    pub fn of(kind: &str) -> Self {
        match kind {
            // A creation starts work; a fleet's grant (a JSON Patch of a batch's spec)
            // starts it in that batch, and its stop stops it.
            "POST asynccommands" | "PATCH asynccommands" => Queue::First,
            k if k.ends_with(" leases") => Queue::First,
            _ => Queue::Rest,
        }
    }
}

#[derive(Debug)]
struct State {
    free: usize,
    first: VecDeque<oneshot::Sender<()>>,
    rest: VecDeque<oneshot::Sender<()>>,
}

/// At most `n` permits out at once; a freed permit goes to the oldest waiter of
/// [`Queue::First`], else of [`Queue::Rest`].
#[derive(Clone, Debug)]
pub struct Limit {
    state: Arc<Mutex<State>>,
}

impl Limit {
    pub fn new(n: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: n,
                first: VecDeque::new(),
                rest: VecDeque::new(),
            })),
        }
    }

    /// A permit, once one is free and every earlier waiter of the same queue (and, for
    /// [`Queue::Rest`], every waiter of [`Queue::First`]) has one.
    pub fn acquire(&self, queue: Queue) -> Acquire {
        let mut state = lock(&self.state);
        // A freed permit goes to a waiter before it is counted free: while one is free
        // nobody waits, so taking it passes nobody over.
        if state.free > 0 {
            state.free -= 1;
            return Acquire {
                state: self.state.clone(),
                reserved: Some(Permit {
                    state: self.state.clone(),
                }),
                waiting: None,
            };
        }
        let (tx, rx) = oneshot::channel();
        match queue {
            Queue::First => state.first.push_back(tx),
            Queue::Rest => state.rest.push_back(tx),
        }
        Acquire {
            state: self.state.clone(),
            reserved: None,
            waiting: Some(rx),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent count.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands a freed permit to the next live waiter, or counts it free.
fn release(state: &Mutex<State>) {
    let mut state = lock(state);
    loop {
        let next = match state.first.pop_front() {
            Some(tx) => Some(tx),
            None => state.rest.pop_front(),
        };
        match next {
            // A waiter that was dropped refuses it; the next one gets it.
            Some(tx) => {
                if tx.send(()).is_ok() {
                    return;
                }
            }
            None => {
                state.free += 1;
                return;
            }
        }
    }
}

/// Waits for a permit. Dropped before it gave one, it gives back whatever it was given.
#[derive(Debug)]
pub struct Acquire {
    state: Arc<Mutex<State>>,
    /// Taken at once, not handed out yet.
    reserved: Option<Permit>,
    /// In a queue.
    waiting: Option<oneshot::Receiver<()>>,
}

impl Future for Acquire {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        if let Some(permit) = self.reserved.take() {
            return Poll::Ready(permit);
        }
        let Some(rx) = self.waiting.as_mut() else {
            // Already gave its permit: never another.
            return Poll::Pending;
        };
        // A sender is dropped unsent only by a state that is gone, and every waiter holds it.
        if Pin::new(rx).poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.waiting = None;
        Poll::Ready(Permit {
            state: self.state.clone(),
        })
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        // Given a permit after its caller gave up: pass it on.
        if let Some(mut rx) = self.waiting.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                release(&self.state);
            }
        }
    }
}

/// One request's slot, freed when dropped.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<State>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(&self.state);
    }
}

/// The tower layer: each request holds a permit until its response starts.
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    limit: Limit,
}

impl InFlightLayer {
    pub fn new(n: usize) -> Self {
        Self {
            limit: Limit::new(n),
        }
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            limit: self.limit.clone(),
        }
    }
}

/// See [`InFlightLayer`].
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    limit: Limit,
}

impl<S, B> tower::Service<http::Request<B>> for InFlight<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    S::Response: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    /// Always ready: a request waits for its permit in its own future, so a request of
    /// the first queue is never held behind one of the rest in a caller's buffer.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let queue = match req.extensions().get::<Kind>() {
            Some(kind) => Queue::of(&kind.0),
            // Not below the counting layer: the kind is worked out here.
            None => Queue::of(&super::request_kind(
                req.method().as_str(),
                req.uri().path(),
                req.uri().query(),
            )),
        };
        let permit = self.limit.acquire(queue);
        // The clone that was readied is the one called (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Each request's wait for a place and the time to its answer's headers, when asked for
        // (`RUST_LOG=nodeops::requests=trace`): where a burst's time goes.
        let traced =
            tracing::enabled!(target: "nodeops::requests", tracing::Level::TRACE).then(|| {
                let request = format!("{} {}", req.method(), req.uri().path());
                (request, std::time::Instant::now())
            });
        Box::pin(async move {
            let _permit = permit.await;
            let sent = traced.as_ref().map(|_| std::time::Instant::now());
            use tower::ServiceExt;
            let answer = inner.ready().await?.call(req).await;
            if let (Some((request, queued)), Some(sent)) = (traced, sent) {
                tracing::trace!(
                    target: "nodeops::requests",
                    request,
                    waited_ms = (sent - queued).as_millis() as u64,
                    took_ms = sent.elapsed().as_millis() as u64,
                    "answered"
                );
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// A place that must be free now.
    fn free(limit: &Limit, queue: Queue) -> Permit {
        limit
            .acquire(queue)
            .now_or_never()
            .expect("a place is free")
    }

    #[test]
    fn requests_are_queued_by_kind() {
        assert_eq!(Queue::of("POST asynccommands"), Queue::First);
        assert_eq!(Queue::of("PUT leases"), Queue::First);
        assert_eq!(Queue::of("GET leases"), Queue::First);
        assert_eq!(Queue::of("PATCH asynccommands"), Queue::First);
        assert_eq!(Queue::of("PATCH asynccommands/status"), Queue::Rest);
        assert_eq!(Queue::of("POST jobs"), Queue::Rest);
        assert_eq!(Queue::of("POST events"), Queue::Rest);
    }

    #[test]
    fn a_freed_permit_goes_to_the_first_queue_then_in_order() {
        let limit = Limit::new(1);
        let held = free(&limit, Queue::Rest);
        let mut rest_a = limit.acquire(Queue::Rest);
        let mut rest_b = limit.acquire(Queue::Rest);
        let mut first = limit.acquire(Queue::First);
        assert!((&mut rest_a).now_or_never().is_none());
        drop(held);
        // The later request of the first queue goes before the earlier ones of the rest.
        assert!((&mut rest_a).now_or_never().is_none());
        let p = (&mut first)
            .now_or_never()
            .expect("first queue served first");
        drop(p);
        let p = (&mut rest_a)
            .now_or_never()
            .expect("then the oldest of the rest");
        assert!((&mut rest_b).now_or_never().is_none());
        drop(p);
        let p = (&mut rest_b).now_or_never().expect("then the next");
        drop(p);
        // Every permit came back: one is free again, and only one.
        let unpolled = limit.acquire(Queue::First);
        drop(unpolled);
        let p = free(&limit, Queue::Rest);
        assert!(limit.acquire(Queue::First).now_or_never().is_none());
        drop(p);
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_permit_on() {
        let limit = Limit::new(1);
        let held = free(&limit, Queue::Rest);
        let gone = limit.acquire(Queue::First);
        let mut next = limit.acquire(Queue::Rest);
        drop(gone);
        drop(held);
        assert!((&mut next).now_or_never().is_some());
        // Given the permit and then dropped without taking it: it is released.
        let limit = Limit::new(1);
        let held = free(&limit, Queue::Rest);
        let given = limit.acquire(Queue::Rest);
        drop(held);
        drop(given);
        assert!(limit.acquire(Queue::Rest).now_or_never().is_some());
    }

    #[test]
    fn the_service_queues_a_request_by_the_kind_it_carries() {
        use tower::{Layer, Service};
        let layer = InFlightLayer::new(1);
        let held = free(&layer.limit, Queue::Rest);
        let echo = tower::service_fn(|req: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(req.uri().path().to_string())
        });
        let mut service = layer.layer(echo);
        let request = |path: &str| http::Request::get(path).body(()).expect("request");
        // The kind carried wins over the path: a pod's path, a Lease's kind.
        let mut rest = service.call(request("/api/v1/namespaces/a/pods"));
        let mut carried = request("/api/v1/namespaces/a/pods/p");
        carried.extensions_mut().insert(Kind("PUT leases".into()));
        let mut first = service.call(carried);
        assert!((&mut rest).now_or_never().is_none());
        drop(held);
        let served = (&mut first)
            .now_or_never()
            .expect("the Lease's queue first");
        assert_eq!(served.expect("served"), "/api/v1/namespaces/a/pods/p");
        assert!((&mut rest).now_or_never().is_some());
        // Without a kind carried, the path's: an AsyncCommand's creation goes first.
        let held = free(&layer.limit, Queue::Rest);
        let mut rest = service.call(request("/api/v1/namespaces/a/pods"));
        let mut first = service.call(
            http::Request::post("/apis/nodeops.io/v1alpha1/namespaces/a/asynccommands")
                .body(())
                .expect("request"),
        );
        assert!((&mut rest).now_or_never().is_none());
        drop(held);
        assert!((&mut first).now_or_never().is_some());
        assert!((&mut rest).now_or_never().is_some());
    }

    #[test]
    fn no_more_than_the_limit_are_out() {
        let limit = Limit::new(3);
        let permits: Vec<Permit> = (0..3)
            .map(|i| {
                let q = if i % 2 == 0 {
                    Queue::First
                } else {
                    Queue::Rest
                };
                free(&limit, q)
            })
            .collect();
        assert!(limit.acquire(Queue::First).now_or_never().is_none());
        assert!(limit.acquire(Queue::Rest).now_or_never().is_none());
        drop(permits);
        assert!(limit.acquire(Queue::Rest).now_or_never().is_some());
    }
}
