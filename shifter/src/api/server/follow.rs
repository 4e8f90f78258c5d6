//! `GET /v1/events?follow=true`: the events so far, then new ones as JSON lines.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::{Response, body::Frame, header};
use tokio::sync::{broadcast, mpsc, watch};

use super::{Body, Control, Readable};
use crate::events::Event;

/// A response body fed by a channel (for `?follow`).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn line(ev: &Event) -> Bytes {
    let mut v = serde_json::to_vec(ev).expect("events serialize");
    v.push(b'\n');
    Bytes::from(v)
}

/// Streams events as JSON lines: those since `since`, then new ones as they happen, until
/// the client goes away or the daemon stops; only those of services in `readable`.
pub(super) fn events<C: Control>(
    control: C,
    since: u64,
    readable: Readable,
    mut stop: watch::Receiver<bool>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sub = control.subscribe();
    tokio::spawn(async move {
        let mut next = since;
        let Ok(backlog) = control.events(since).await else {
            return;
        };
        for ev in &backlog {
            if readable.allows(&ev.service) && tx.send(line(ev)).await.is_err() {
                return;
            }
            next = ev.seq + 1;
        }
        loop {
            tokio::select! {
                () = crate::util::stopped(&mut stop) => return,
                () = tx.closed() => return,
                r = sub.recv() => match r {
                    Ok(ev) if ev.seq >= next => {
                        next = ev.seq + 1;
                        if readable.allows(&ev.service) && tx.send(line(&ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let Ok(missed) = control.events(next).await else {
                            return;
                        };
                        for ev in &missed {
                            if readable.allows(&ev.service) && tx.send(line(ev)).await.is_err() {
                                return;
                            }
                            next = ev.seq + 1;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}
