//! Test helpers: a tiny hand-written HTTP/1.1 client over a tokio `TcpStream`.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use meridian_demo_backend::BackendSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for every test body.
pub const TEST_LIMIT: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test if it takes longer than [`TEST_LIMIT`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, fut)
        .await
        .expect("test exceeded its time limit")
}

/// A spec on 127.0.0.1 with an ephemeral port.
pub fn spec(name: &str, region: &str) -> BackendSpec {
    BackendSpec::new(name, region, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// First value of header `name` (case-insensitive) as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// One client connection, reusable for several requests (keep-alive).
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(addr).await?,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Sends `GET path` with keep-alive.
    pub async fn send_get(&mut self, path: &str) -> io::Result<()> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.send(req.as_bytes()).await
    }

    /// `GET path` and its response.
    pub async fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.send_get(path).await?;
        self.read_response().await
    }

    /// Reads more bytes into the buffer; cancel-safe. Returns how many were read.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(64 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads one response (bodies must be Content-Length framed). Cancel-safe.
    pub async fn read_response(&mut self) -> io::Result<Resp> {
        let (head_len, status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                        .collect::<Vec<_>>();
                    break (n, parsed.code.unwrap_or(0), headers);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        let len = if matches!(status, 100..=199 | 204 | 304) {
            0
        } else {
            resp.header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?
        };
        while self.buf.len() < head_len + len {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        resp.body = self.buf[head_len..head_len + len].to_vec();
        self.buf.drain(..head_len + len);
        Ok(resp)
    }

    /// True once the peer has closed (EOF or reset) within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.fill()).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One-shot `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    let mut conn = RawConn::connect(addr).await.expect("connect");
    conn.get(path).await.expect("response")
}
