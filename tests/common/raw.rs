//! A minimal WebSocket client over a raw TCP stream, for what a well-behaved client
//! library will not do (never answer pings, send invalid UTF-8, stop half-way).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal WebSocket client over a raw TCP stream: it does only what a test asks.
pub struct RawWs {
    pub tcp: TcpStream,
}

impl RawWs {
    pub async fn connect(addr: std::net::SocketAddr) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawWs { tcp }
    }

    pub async fn send_text(&mut self, text: &str) {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81u8];
        let n = text.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&f).await.unwrap();
    }

    /// `(opcode, payload)` of the next frame, `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b0 = self.tcp.read_u8().await.ok()?;
        let b1 = self.tcp.read_u8().await.ok()?;
        let len = match b1 & 0x7f {
            126 => u64::from(self.tcp.read_u16().await.ok()?),
            127 => self.tcp.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some((b0 & 0x0f, payload))
    }
}
