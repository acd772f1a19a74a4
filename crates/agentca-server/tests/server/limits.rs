//! Hostile clients: huge bodies, slow headers and bodies, idle connections, too many
//! connections. Each gets the right HTTP answer or a closed connection in bounded time, and
//! the server keeps serving everyone else.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

fn short_timeouts() -> agentca_server::ServerConfig {
    agentca_server::ServerConfig {
        header_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        ..test_config()
    }
}

/// Reads until the peer closes (or errors); returns what was read.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, started.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {limit:?}; read {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// A body over the limit gets 413 as soon as the head announces it, without the server
/// waiting for (or reading) the body; a chunked one is cut off at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let ca = TestCa::new();
    let server = Running::start(&ca, short_timeouts()).await;
    let addr = server.addrs.http;

    // Content-Length of 1 MB, and not one body byte sent.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .unwrap();
    let (reply, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // Chunked: cut off once 16 KiB have been read.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = [b'A'; 4096];
    for _ in 0..8 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let (reply, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // A whole 1 MB body from a normal client.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(0x30, 1 << 20));
    let _ = stream.write_all(&request).await;
    let (reply, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 413"));

    // Still serving.
    assert_eq!(get(addr, "/healthz").await.status, StatusCode::OK);
    let text = metrics_text(addr).await;
    assert!(
        text.contains(
            "agentca_http_requests_total{listener=\"http\",route=\"ocsp\",status=\"413\"}"
        ),
        "{text}"
    );
    server.stop().await;
}

/// Slowloris: a client trickling its request head one byte a second is cut off by the header
/// timeout, while other clients are served as usual. A trickled body gets 408 at the request
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let ca = TestCa::new();
    let config = short_timeouts();
    let header_timeout = config.header_timeout;
    let request_timeout = config.request_timeout;
    let server = Running::start(&ca, config).await;
    let addr = server.addrs.http;

    let mut trickling = Vec::new();
    for _ in 0..20 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        tokio::spawn(async move {
            let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
            for byte in head {
                if write.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        trickling.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                }
            }
        }));
    }

    // Meanwhile, ordinary requests are answered promptly.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < header_timeout {
        let t = Instant::now();
        let reply = get(addr, "/healthz").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "slow answer while under slowloris"
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for handle in trickling {
        let closed_after = tokio::time::timeout(header_timeout + Duration::from_secs(3), handle)
            .await
            .expect("slow client not cut off")
            .unwrap();
        assert!(
            closed_after <= header_timeout + Duration::from_millis(1500),
            "{closed_after:?}"
        );
    }
    println!("{served} requests served while 20 slow clients were cut off");

    // A trickled body: the head is complete, the body never is.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let _ = stream.write_all(b"0").await;
            }
        }
        assert!(
            started.elapsed() < request_timeout + Duration::from_secs(3),
            "slow body not cut off"
        );
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= request_timeout - Duration::from_millis(100));
    server.stop().await;
}

/// Idle connections are closed after the header timeout, a TLS client that never finishes
/// its handshake too, and past the connection limit clients wait instead of being served
/// beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_the_connection_limit() {
    let ca = TestCa::new();
    let config = agentca_server::ServerConfig {
        max_connections: 4,
        ..short_timeouts()
    };
    let header_timeout = config.header_timeout;
    let server = Running::start(&ca, config).await;

    // Silent on HTTPS: no ClientHello.
    let mut silent = TcpStream::connect(server.addrs.https).await.unwrap();
    let (_, after) = read_to_close(&mut silent, header_timeout + Duration::from_secs(2)).await;
    assert!(
        after >= header_timeout - Duration::from_millis(100),
        "{after:?}"
    );

    // Four idle connections take every slot; a fifth client waits until the header timeout
    // frees them.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(server.addrs.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let reply = request(server.addrs.http, Method::GET, "/healthz", &[], vec![]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "served beyond the limit after {waited:?}"
    );
    assert!(
        waited <= header_timeout + Duration::from_secs(2),
        "{waited:?}"
    );
    for mut stream in idle {
        let (_, _) = read_to_close(&mut stream, Duration::from_secs(1)).await;
    }
    server.stop().await;
}

/// Shutdown lets a request in flight finish, refuses new connections, and `run` returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let ca = TestCa::new();
    let mut server = Running::start(&ca, short_timeouts()).await;
    let addr = server.addrs.http;
    let record = ca.issue();
    let der = ocsp_request(
        &ca.issuer(),
        agentca_core::ocsp::HashAlgorithm::Sha1,
        record.intent.serial.as_bytes(),
        None,
    );

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
        der.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&der[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.signal_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );

    stream.write_all(&der[10..]).await.unwrap();
    let (reply, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body_at = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        status_of(&reply[body_at..]),
        Ok(agentca_core::ocsp::CertStatus::Good)
    );
    server.join().await;
}
