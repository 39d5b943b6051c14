//! `com.atproto.sync.subscribeRepos`: the websocket firehose (hyper upgrade +
//! tokio-tungstenite). Frames are binary: a DAG-CBOR header then a DAG-CBOR body.
//!
//! With `cursor=N` the events with seq > N are replayed from the event log first, then live
//! events follow; without a cursor only live events are sent. A cursor beyond the newest
//! event gets an error frame (`{op:-1}` + `FutureCursor`) and the socket is closed. A client
//! that falls more than the broadcast buffer (1024 events) behind gets `ConsumerTooSlow`.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Params, XrpcError, XrpcErrorKind, XrpcResult};
use crate::app::http::empty;
use crate::pds::{encode_error_frame, HoldPds, Subscription, REPLAY_BATCH};

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

pub async fn subscribe(hold: &Arc<HoldPds>, mut req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    let cursor = match p.get("cursor") {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| XrpcError::invalid("cursor must be a non-negative integer"))?,
        ),
    };
    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let (true, Some(accept)) = (is_ws, key) else {
        return Err(XrpcError::invalid(
            "subscribeRepos is a websocket endpoint (Upgrade: websocket)",
        ));
    };
    let sub = hold.subscribe().ok_or_else(|| {
        XrpcError::new(
            XrpcErrorKind::ConsumerTooSlow,
            "too many firehose subscribers",
        )
    })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let hold = hold.clone();
    tokio::spawn(async move {
        let mut sub = sub;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                if let Err(e) = stream(&hold, &mut sub, ws, cursor).await {
                    tracing::debug!(error = %e, "firehose subscriber gone");
                }
            }
            Err(e) => tracing::debug!(error = %e, "firehose upgrade failed"),
        }
        // The hold handle goes before the subscriber slot, so `HoldPds::close` returning
        // means no subscriber still holds the database.
        drop(hold);
        drop(sub);
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(empty())
        .expect("static headers are valid"))
}

/// A subscriber that cannot take one frame within this time is dropped.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn send(ws: &mut Ws, frame: bytes::Bytes) -> Result<(), StreamError> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Binary(frame))).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StreamError::Stalled),
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("subscriber stalled for {SEND_TIMEOUT:?}")]
    Stalled,
    #[error(transparent)]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Hold(#[from] crate::pds::HoldError),
}

async fn close_with(ws: &mut Ws, error: &str, message: &str) -> Result<(), StreamError> {
    ws.send(Message::Binary(encode_error_frame(error, message).into()))
        .await?;
    ws.close(Some(CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy,
        reason: error.to_string().into(),
    }))
    .await?;
    Ok(())
}

async fn stream(
    hold: &HoldPds,
    sub: &mut Subscription,
    mut ws: Ws,
    cursor: Option<u64>,
) -> Result<(), StreamError> {
    let mut last = 0u64;
    if let Some(cursor) = cursor {
        let newest = hold.last_seq().await?;
        if cursor > newest {
            return close_with(&mut ws, "FutureCursor", "Cursor in the future.").await;
        }
        last = cursor;
        loop {
            let batch = hold.events_after(last, REPLAY_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            for (seq, frame) in batch {
                send(&mut ws, frame).await?;
                last = seq;
            }
        }
    }
    loop {
        tokio::select! {
            ev = sub.live.recv() => match ev {
                Ok((seq, frame)) => {
                    if seq > last {
                        send(&mut ws, frame).await?;
                        last = seq;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    return close_with(&mut ws, "ConsumerTooSlow", "Stream consumer too slow").await;
                }
                Err(RecvError::Closed) => break,
            },
            msg = ws.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {} // pings are answered by tungstenite; other input is ignored
            },
            _ = sub.shutdown.changed() => break,
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}
