//! `/v1/events`: stored events after `since`, then live ones, over SSE,
//! filtered to the caller's team.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use godel_control::{Caller, Control};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay stored events with a sequence number above this (default: none, live only).
    #[serde(default)]
    since: Option<i64>,
}

fn to_sse(ev: &godel_core::Event) -> SseEvent {
    SseEvent::default()
        .event(ev.kind.as_str())
        .id(ev.seq.to_string())
        .data(serde_json::to_string(ev).unwrap_or_default())
}

pub async fn stream(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    // Subscribe before reading the backlog so nothing falls in between.
    let mut rx = c.subscribe();
    let backlog = match q.since {
        Some(since) => c.events_since(&caller, since, 10_000)?,
        None => Vec::new(),
    };
    let mut last = backlog
        .last()
        .map(|e| e.seq)
        .unwrap_or(q.since.unwrap_or(0));
    let stream = async_stream(move |tx| async move {
        for ev in &backlog {
            if tx.send(Ok(to_sse(ev))).await.is_err() {
                return;
            }
        }
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if ev.seq <= last || !ev.team.as_deref().is_none_or(|t| caller.sees(t)) {
                        continue;
                    }
                    if matches!(caller, Caller::Team(_)) && ev.team.is_none() {
                        continue;
                    }
                    last = ev.seq;
                    if tx.send(Ok(to_sse(&ev))).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task through a channel.
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
