//! A TCP load balancer in front of CA nodes, as a cloud deployment has one: each new
//! connection goes to the next node in turn, and a connection idle for [`RoundRobin::IDLE`]
//! is closed, so a client's next request opens a new one, to the other node. TLS passes
//! through untouched: the nodes serve the CA's own certificates, and links follow the `Host`
//! header, so a client sees one CA at the balancer's address.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct RoundRobin {
    pub(crate) addr: SocketAddr,
    /// Connections sent to each node.
    sent: Arc<[AtomicUsize; 2]>,
    stop: Arc<AtomicBool>,
}

impl RoundRobin {
    pub(crate) const IDLE: Duration = Duration::from_secs(2);

    pub(crate) fn start(nodes: [SocketAddr; 2]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let (counts, halt) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            for client in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                // A node that is down (killed by the test) is skipped, as a balancer's health
                // check would; the client is refused only when both are.
                let node = TcpStream::connect(nodes[next])
                    .map(|s| (s, next))
                    .or_else(|_| TcpStream::connect(nodes[1 - next]).map(|s| (s, 1 - next)));
                let Ok((node, used)) = node else { continue };
                counts[used].fetch_add(1, Ordering::SeqCst);
                next = 1 - used;
                std::thread::spawn(move || relay(client, node));
            }
        });
        Self { addr, sent, stop }
    }

    /// Connections sent to each node so far.
    pub(crate) fn sent(&self) -> [usize; 2] {
        [
            self.sent[0].load(Ordering::SeqCst),
            self.sent[1].load(Ordering::SeqCst),
        ]
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag and returns.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies bytes both ways until both sides have closed, or nothing moved for
/// [`RoundRobin::IDLE`]. An end that stops reading (a node answering a request it refuses
/// before reading all of it, then closing) does not cut the other direction short: what the
/// client still sends is read and dropped, while the node's answer reaches it, as it would
/// from the node directly.
fn relay(client: TcpStream, node: TcpStream) {
    let last = Arc::new(Mutex::new(Instant::now()));
    let pipe = |mut from: TcpStream, mut to: TcpStream, last: Arc<Mutex<Instant>>| {
        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 16 * 1024];
        let mut dropping = false;
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    *last.lock().unwrap() = Instant::now();
                    if !dropping && to.write_all(&buf[..n]).is_err() {
                        dropping = true;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if last.lock().unwrap().elapsed() >= RoundRobin::IDLE {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        // Half-close: the other end reads to the end of what this one sent.
        let _ = to.shutdown(Shutdown::Write);
    };
    let (Ok(c2), Ok(n2)) = (client.try_clone(), node.try_clone()) else {
        return;
    };
    let up = {
        let last = last.clone();
        std::thread::spawn(move || pipe(client, node, last))
    };
    pipe(n2, c2, last);
    let _ = up.join();
}
