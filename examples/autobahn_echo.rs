//! An echo server on the relay's own WebSocket layer (`ws::accept`, `ws::conn::Conn`,
//! `ws::codec`), for the Autobahn conformance cases (`scripts/check-autobahn`).
//!
//! ```sh
//! cargo run --release --example autobahn_echo -- 127.0.0.1:0
//! ```
//!
//! It prints `listening on ws://ADDR` once bound (port 0 picks a free port), then echoes
//! every text and binary message, answers pings, echoes a client's close code, and closes
//! a connection that breaks RFC 6455 with the code its error has (1002, 1007 or 1009). It
//! is a test tool, not the relay: no authentication, no limits beyond the message size,
//! and binary is echoed, where the relay's session refuses it with 1003.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use sealcast::ws::codec::{self, Inbound};
use sealcast::ws::conn::{Conn, RecvError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The largest message echoed: the Autobahn cases send up to 16 MiB (case 9.1.6).
const MAX_MESSAGE: usize = 32 << 20;
/// How long a close waits for the client's answer.
const LINGER: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), None) = (args.next(), args.next()) else {
        eprintln!("usage: autobahn_echo HOST:PORT   (for example 127.0.0.1:0)");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("autobahn_echo: {addr:?} is not HOST:PORT: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("autobahn_echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let bound = listener
        .local_addr()
        .expect("a bound listener has an address");
    // The script that starts this server reads this line for the port.
    println!("listening on ws://{bound}");
    let app = axum::Router::new().fallback(upgrade);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("autobahn_echo: {e}");
        std::process::exit(1);
    }
}

/// Any path: accepts the WebSocket handshake and echoes on the upgraded stream.
async fn upgrade(mut req: Request) -> Response {
    let accepted = match sealcast::ws::accept(&mut req) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    tokio::spawn(async move {
        let Ok(upgraded) = accepted.on_upgrade.await else {
            return;
        };
        // Taken back out of hyper's boxed IO, as the relay's session does.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let io = parts.io.into_inner();
                // Small echoes go out at once instead of waiting on Nagle's algorithm.
                let _ = io.set_nodelay(true);
                echo(Conn::new(io, &parts.read_buf, MAX_MESSAGE)).await;
            }
            Err(up) => echo(Conn::new(TokioIo::new(up), &[], MAX_MESSAGE)).await,
        }
    });
    accepted.response
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut conn: Conn<S>) {
    loop {
        let sent = match conn.recv().await {
            Ok(Inbound::Text(t)) => conn.send_text(t.as_bytes()).await,
            Ok(Inbound::Binary(b)) => conn.send_binary(&b).await,
            Ok(Inbound::Ping(p)) => conn.send_frame(&codec::pong_frame(&p)).await,
            Ok(Inbound::Pong) => Ok(()),
            Ok(Inbound::Close(code)) => return conn.answer_close(code, LINGER).await,
            Err(RecvError::Codec(e)) => {
                return conn.close(Some(e.close_code()), "", LINGER, LINGER).await;
            }
            Err(RecvError::Gone) => return,
        };
        if sent.is_err() {
            return;
        }
    }
}
