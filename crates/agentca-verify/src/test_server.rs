//! A tiny HTTP/1.1 server on 127.0.0.1:0 for tests: answers each request with what a handler
//! returns, and counts requests. Stopped when dropped.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Handler = dyn Fn(&[u8]) -> (u16, Vec<u8>) + Send + Sync;

pub(crate) struct TestServer {
    pub(crate) url: String,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves `handler(body)` at every path; `path` is appended to the URL it reports.
    pub(crate) async fn start(
        path: &str,
        handler: impl Fn(&[u8]) -> (u16, Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        Self::spawn(path, Some(Arc::new(handler))).await
    }

    /// Serves a fixed 200 body.
    pub(crate) async fn fixed(path: &str, body: Vec<u8>) -> Self {
        Self::start(path, move |_| (200, body.clone())).await
    }

    /// Accepts connections and reads requests, but never answers.
    pub(crate) async fn silent(path: &str) -> Self {
        Self::spawn(path, None).await
    }

    async fn spawn(path: &str, handler: Option<Arc<Handler>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, handler, counter).await;
                });
            }
        });
        Self { url, hits, task }
    }

    /// How many requests arrived.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Option<Arc<Handler>>,
    hits: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let Some(handler) = handler else {
        // Hold the connection open without answering until the client gives up.
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        return Ok(());
    };
    let (status, body) = handler(&buf[head_end..head_end + len]);
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// A port nobody listens on (bound, then released).
pub(crate) fn closed_port_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}{path}")
}
