//! Writes a [`StreamPlan`] as a `text/event-stream` response, paced as the script asks:
//! a delay before the first chunk, a hold at a [`StreamGate`](super::StreamGate), a stall
//! or a dropped connection at the end.
//!
//! The body is a stream polled by the connection itself, not fed by a spawned task: when
//! the client goes away the connection drops the body, and with it any wait in progress,
//! so a stalled or held reply never outlives its client.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream;

use super::gate::GateState;
use super::stream::{StreamPlan, Tail};

/// How a streamed reply is paced.
pub(super) struct Pacing {
    /// How long to wait before the first event (the status and headers go out at once).
    pub first_event_delay: Duration,
    /// The gate to stop at after the plan's first part, if the test holds this stream.
    pub gate: Option<Arc<GateState>>,
    /// Send the whole plan as one body with a length when it has no pauses.
    pub buffered: bool,
}

/// One thing the body does next.
enum Step {
    Wait(Duration),
    Send(String),
    MarkFirstPartSent(Arc<GateState>),
    AwaitRelease(Arc<GateState>),
    Stall,
    Close,
}

/// A 200 `text/event-stream` response sending `plan` as paced. `guard` is dropped when the
/// body ends or is abandoned by a departing client.
pub(super) fn response<G: Send + 'static>(plan: StreamPlan, pacing: Pacing, guard: G) -> Response {
    let buffered = pacing.buffered;
    let steps = steps(plan, pacing);
    if buffered && steps.iter().all(|step| matches!(step, Step::Send(_))) {
        let body: String = steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Send(data) => Some(event(&data)),
                _ => None,
            })
            .collect();
        drop(guard);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream")],
            body,
        )
            .into_response();
    }
    let body = stream::unfold(
        (steps.into_iter(), guard),
        |(mut steps, guard)| async move {
            let event = next_event(&mut steps).await?;
            Some((event, (steps, guard)))
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One server-sent event carrying `data`.
fn event(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// Carries out `steps` up to the next event to send and returns it; `None` when the body
/// is complete, an error when the connection is to be dropped.
async fn next_event(steps: &mut impl Iterator<Item = Step>) -> Option<io::Result<Bytes>> {
    loop {
        match steps.next()? {
            Step::Wait(delay) => tokio::time::sleep(delay).await,
            Step::Send(data) => return Some(Ok(Bytes::from(event(&data)))),
            // Reached only when the connection polls for more, so everything before it
            // has been handed over.
            Step::MarkFirstPartSent(gate) => gate.mark_first_part_sent(),
            Step::AwaitRelease(gate) => gate.released().await,
            Step::Stall => std::future::pending::<()>().await,
            Step::Close => {
                // The connection writes out what it holds only when the body has nothing
                // ready; yielding once lets the events before the cut reach the client.
                tokio::task::yield_now().await;
                // An error from the body makes the server abort the connection without
                // the chunked encoding's end marker: the client sees a truncated reply.
                return Some(Err(io::Error::other("mock: connection dropped mid-reply")));
            }
        }
    }
}

/// `plan` as a list of steps: the delay, the first part, the gate, the rest, the tail.
fn steps(plan: StreamPlan, pacing: Pacing) -> Vec<Step> {
    let mut steps = Vec::with_capacity(plan.events.len() + 4);
    if !pacing.first_event_delay.is_zero() {
        steps.push(Step::Wait(pacing.first_event_delay));
    }
    let mut events = plan.events.into_iter();
    steps.extend(events.by_ref().take(plan.first_part).map(Step::Send));
    if let Some(gate) = pacing.gate {
        steps.push(Step::MarkFirstPartSent(gate.clone()));
        steps.push(Step::AwaitRelease(gate));
    }
    steps.extend(events.map(Step::Send));
    match plan.tail {
        Tail::End => {}
        Tail::Stall => steps.push(Step::Stall),
        Tail::Close => steps.push(Step::Close),
    }
    steps
}
