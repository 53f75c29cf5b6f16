//! A WebSocket spoken byte by byte over a raw TCP stream, for what a well-behaved client
//! library will not do (never answer pings, send invalid UTF-8, stop half-way).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// A WebSocket spoken byte by byte, to send what no WebSocket library would.
pub struct RawWs {
    pub tcp: TcpStream,
}

pub fn ws_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        f.push(mask_bit | n as u8);
    } else if n <= usize::from(u16::MAX) {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if masked {
        let mask = [0x3au8, 0x91, 0x5c, 0x07];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

pub fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

impl RawWs {
    pub async fn open(addr: SocketAddr) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(upgrade_request(addr).as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        tokio::time::timeout(WAIT, async {
            while !head.ends_with(b"\r\n\r\n") {
                head.push(tcp.read_u8().await.unwrap());
            }
        })
        .await
        .expect("upgrade answer");
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawWs { tcp }
    }

    /// Sends one masked, final text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send(&ws_frame(true, 0x1, text.as_bytes(), true)).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The relay may close first; that is an answer too.
        let _ = self.tcp.write_all(bytes).await;
    }

    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b0 = self.tcp.read_u8().await.ok()?;
        let b1 = self.tcp.read_u8().await.ok()?;
        let len = match b1 & 0x7f {
            126 => u64::from(self.tcp.read_u16().await.ok()?),
            127 => self.tcp.read_u64().await.ok()?,
            n => u64::from(n),
        };
        if len > 1 << 20 {
            return None;
        }
        let mut payload = vec![0u8; len as usize];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some((b0 & 0x0f, payload))
    }

    /// How the relay ended the connection: `Some(code)` for a close frame (0 without a
    /// code), `None` for a plain end of stream. Panics if it stays open past `wait`.
    pub async fn ending(&mut self, wait: Duration) -> Option<u16> {
        tokio::time::timeout(wait, async {
            loop {
                match self.read_frame().await {
                    None => return None,
                    Some((0x8, p)) => {
                        return Some(p.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])));
                    }
                    Some(_) => {}
                }
            }
        })
        .await
        .expect("the relay must end a hostile connection in time")
    }
}
