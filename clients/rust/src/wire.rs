//! The protocol frame by frame, for tests of a relay and for tools: a WebSocket
//! [`Client`] that sends and reads raw JSON frames (no reconnect, no decryption) and an HTTP
//! [`Publisher`] that answers every status as it came (no retry). The relay's black-box tests
//! and the load generator are written on it; [`lean`] is the same protocol with a minimal
//! codec, for reading many sockets at load. Applications use [`crate::Subscriber`] and
//! [`crate::Publisher`] instead.
//!
//! ```no_run
//! # async fn demo(token: &str) -> Result<(), sealcast_client::wire::ClientError> {
//! use sealcast_client::wire::Client;
//! let (mut c, connected) = Client::connect("ws://127.0.0.1:8080/v1/ws", token).await?;
//! assert_eq!(connected["type"], "connected");
//! let subscribed = c.subscribe("site/1#news", None).await?;
//! println!("at offset {}", subscribed["offset"]);
//! # Ok(()) }
//! ```

pub mod lean;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The HTTP request failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Nothing arrived in time.
    #[error("timed out waiting for the relay")]
    Timeout,
    /// The relay closed the connection.
    #[error("closed by the relay with code {code:?}")]
    Closed {
        /// The close code, if any.
        code: Option<u16>,
    },
    /// A frame that is not what the protocol says here.
    #[error("unexpected frame: {0}")]
    Unexpected(Value),
}

/// What the relay sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON frame.
    Frame(Value),
    /// A close frame (code) or the end of the stream (`None`).
    Closed(Option<u16>),
}

/// A WebSocket connection to the relay.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for a particular reply.
    pending: VecDeque<Value>,
    next_id: u64,
}

/// The default wait for a reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Opens the socket without authenticating. `url` is `ws://host:port/v1/ws`.
    pub async fn open(url: &str) -> Result<Client, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
        })
    }

    /// Opens the socket with extra request headers (`Origin`, `X-Forwarded-For`, ...),
    /// without authenticating; a refused upgrade is [`ClientError::Ws`] with its HTTP
    /// response.
    pub async fn open_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut req = url.into_client_request()?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Ws(tokio_tungstenite::tungstenite::Error::from(e)))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| ClientError::Ws(tokio_tungstenite::tungstenite::Error::from(e)))?;
            req.headers_mut().append(name, value);
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Client {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
        })
    }

    /// Opens a `wss://` socket trusting the roots of `tls`, without authenticating.
    pub async fn open_tls(
        url: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                .await?;
        Ok(Client {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
        })
    }

    /// Opens and authenticates; returns the `connected` frame.
    pub async fn connect(url: &str, token: &str) -> Result<(Client, Value), ClientError> {
        let c = Client::open(url).await?;
        c.authenticate(token).await
    }

    /// Sends `connect` on an opened socket and waits for `connected`.
    pub async fn authenticate(self, token: &str) -> Result<(Client, Value), ClientError> {
        let mut c = self;
        c.send(&json!({"type":"connect","token":token})).await?;
        match c.next(REPLY_TIMEOUT).await? {
            Incoming::Frame(f) if f["type"] == "connected" => Ok((c, f)),
            Incoming::Frame(f) => Err(ClientError::Unexpected(f)),
            Incoming::Closed(code) => Err(ClientError::Closed { code }),
        }
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.send_raw(Message::text(frame.to_string())).await
    }

    /// Sends any WebSocket message.
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), ClientError> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next frame (buffered first), answering pings on the way.
    pub async fn next(&mut self, wait: Duration) -> Result<Incoming, ClientError> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(Incoming::Frame(f));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(None) => return Ok(Incoming::Closed(None)),
                Ok(Some(Err(_))) => return Ok(Incoming::Closed(None)),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t)
                        .map_err(|_| ClientError::Unexpected(Value::String(t.to_string())))?;
                    return Ok(Incoming::Frame(v));
                }
                Message::Close(frame) => {
                    return Ok(Incoming::Closed(
                        frame.map(|f: CloseFrame| u16::from(f.code)),
                    ));
                }
                // tungstenite answers pings itself when it next writes or flushes.
                _ => continue,
            }
        }
    }

    /// The next JSON frame; a close is an error.
    pub async fn frame(&mut self, wait: Duration) -> Result<Value, ClientError> {
        match self.next(wait).await? {
            Incoming::Frame(f) => Ok(f),
            Incoming::Closed(code) => Err(ClientError::Closed { code }),
        }
    }

    /// Waits for the relay to close; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> Result<Option<u16>, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Incoming::Closed(code) = self.next(left).await? {
                return Ok(code);
            }
        }
    }

    /// Sends a request with a fresh id and waits for the reply with that id; frames in
    /// between are kept for [`Client::next`].
    pub async fn request(&mut self, mut frame: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send(&frame).await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        let mut held = Vec::new();
        let reply = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => break Err(ClientError::Timeout),
                Ok(None) | Ok(Some(Err(_))) => break Err(ClientError::Closed { code: None }),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t)
                        .map_err(|_| ClientError::Unexpected(Value::Null))?;
                    if v["id"] == json!(id) {
                        break Ok(v);
                    }
                    held.push(v);
                }
                Message::Close(f) => {
                    break Err(ClientError::Closed {
                        code: f.map(|f| u16::from(f.code)),
                    });
                }
                _ => {}
            }
        };
        self.pending.extend(held);
        reply
    }

    /// Subscribes, optionally recovering; returns the `subscribed` (or `error`) reply.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<(&str, u64)>,
    ) -> Result<Value, ClientError> {
        let mut f = json!({"type":"subscribe","channel":channel});
        if let Some((epoch, offset)) = since {
            f["since"] = json!({"epoch":epoch,"offset":offset});
        }
        self.request(f).await
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// An HTTP publisher.
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    base: String,
}

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`Null` if none).
    pub body: Value,
}

impl Publisher {
    /// `base` is `http://host:port`.
    pub fn new(base: &str) -> Publisher {
        Publisher {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// `base` is `http://host:port` or `https://host:port`, requests go through `http`
    /// (for `https://`, a client that trusts the relay's certificate).
    pub fn with_client(base: &str, http: reqwest::Client) -> Publisher {
        Publisher {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// POSTs JSON to `path` with a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<Answer, ClientError> {
        let r = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// `POST /v1/publish`.
    pub async fn publish(
        &self,
        token: &str,
        channel: &str,
        event: &str,
        data: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let mut body = json!({"channel":channel,"event":event,"data":data});
        if let Some(k) = idempotency_key {
            body["idempotency_key"] = json!(k);
        }
        self.post("/v1/publish", token, &body).await
    }

    /// `POST /v1/publish/batch`.
    pub async fn publish_batch(
        &self,
        token: &str,
        publications: &[Value],
    ) -> Result<Answer, ClientError> {
        self.post(
            "/v1/publish/batch",
            token,
            &json!({"publications":publications}),
        )
        .await
    }
}
