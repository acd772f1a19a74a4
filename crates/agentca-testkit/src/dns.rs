//! A small authoritative DNS server for tests, on 127.0.0.1.
//!
//! Validation tests need names that resolve to loopback addresses, TXT records, and answers
//! that change between queries (DNS rebinding). [`FakeDns`] serves exactly the records a
//! test sets, answers NXDOMAIN for every other name, and counts the queries it saw so a test
//! can tell how often a name was looked up. It runs on its own threads, independent of any
//! async runtime, over UDP and TCP on the same port, and stops when dropped.
//!
//! Messages are parsed and built with hickory-proto; nothing here encodes DNS by hand.

// A server that cannot bind or spawn fails the test that started it, which is what a
// panic here does.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{RData, Record, RecordType};

/// How long the server threads wait before looking at the stop flag again.
const POLL: Duration = Duration::from_millis(20);
/// The largest UDP answer sent without EDNS (RFC 1035 §4.2.1); beyond it, truncate.
const CLASSIC_UDP_LIMIT: usize = 512;

#[derive(Default)]
struct Zone {
    /// Address sets per name, served in turn: query n of a type gets set n mod len.
    addresses: HashMap<String, Vec<Vec<IpAddr>>>,
    txt: HashMap<String, Vec<String>>,
    queries: HashMap<(String, RecordType), u64>,
}

/// A DNS server answering from records the test sets. See the module documentation.
pub struct FakeDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeDns {
    /// Starts a server on 127.0.0.1, UDP and TCP on one ephemeral port.
    pub fn start() -> Self {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("fake DNS: local address");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![
            {
                let (zone, stop) = (zone.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("fake-dns-udp".into())
                    .spawn(move || serve_udp(&udp, &zone, &stop))
                    .expect("fake DNS: spawn UDP thread")
            },
            {
                let (zone, stop) = (zone.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("fake-dns-tcp".into())
                    .spawn(move || serve_tcp(&tcp, &zone, &stop))
                    .expect("fake DNS: spawn TCP thread")
            },
        ];
        Self {
            addr,
            zone,
            stop,
            threads,
        }
    }

    /// The address to send queries to (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn zone(&self) -> MutexGuard<'_, Zone> {
        lock(&self.zone)
    }

    /// Serves `addresses` for `name`: the IPv4 ones as A, the IPv6 ones as AAAA records.
    pub fn set_a(&self, name: &str, addresses: Vec<IpAddr>) {
        self.zone().addresses.insert(key(name), vec![addresses]);
    }

    /// Serves `first` to the first A (and AAAA) query for `name`, `second` to the next, and
    /// so on alternately: a rebinding name.
    pub fn set_a_alternating(&self, name: &str, first: Vec<IpAddr>, second: Vec<IpAddr>) {
        self.set_a_sequence(name, vec![first, second]);
    }

    /// Serves the sets in turn, one per query of each address type, starting over at the end.
    pub fn set_a_sequence(&self, name: &str, sets: Vec<Vec<IpAddr>>) {
        assert!(!sets.is_empty(), "fake DNS: an empty address sequence");
        self.zone().addresses.insert(key(name), sets);
    }

    /// Serves one TXT record per value for `name` (values longer than 255 bytes are split
    /// into several character-strings of one record).
    pub fn set_txt(&self, name: &str, values: Vec<String>) {
        self.zone().txt.insert(key(name), values);
    }

    /// Forgets every record of `name`: it answers NXDOMAIN again.
    pub fn remove(&self, name: &str) {
        let mut zone = self.zone();
        zone.addresses.remove(&key(name));
        zone.txt.remove(&key(name));
    }

    /// How many queries of `record_type` (`"A"`, `"AAAA"`, `"TXT"`, ...) asked for `name`.
    pub fn queries(&self, name: &str, record_type: &str) -> u64 {
        let Ok(record_type) = record_type.parse::<RecordType>() else {
            return 0;
        };
        self.zone()
            .queries
            .get(&(key(name), record_type))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for FakeDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDns").field("addr", &self.addr).finish()
    }
}

/// A poisoned lock only means another test thread panicked; the zone is still usable.
fn lock(zone: &Mutex<Zone>) -> MutexGuard<'_, Zone> {
    zone.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A UDP socket and a TCP listener on the same loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("fake DNS: bind UDP");
        let port = udp.local_addr().expect("fake DNS: local address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            udp.set_read_timeout(Some(POLL))
                .expect("fake DNS: UDP timeout");
            tcp.set_nonblocking(true)
                .expect("fake DNS: TCP nonblocking");
            return (udp, tcp);
        }
    }
    panic!("fake DNS: no port free for both UDP and TCP on 127.0.0.1");
}

fn serve_udp(socket: &UdpSocket, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                if let Some(reply) = answer(&buf[..len], zone, Transport::Udp) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn serve_tcp(listener: &TcpListener, zone: &Arc<Mutex<Zone>>, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (zone, stop) = (zone.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name("fake-dns-tcp-conn".into())
                    .spawn(move || serve_tcp_connection(stream, &zone, &stop));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2) until the client closes, idles or the server
/// stops.
fn serve_tcp_connection(mut stream: TcpStream, zone: &Mutex<Zone>, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .is_err()
    {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        let Some(reply) = answer(&query, zone, Transport::Tcp) else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_all(&reply_len.to_be_bytes()).is_err() || stream.write_all(&reply).is_err()
        {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The encoded reply to one query, or `None` for something that is not a query at all.
fn answer(packet: &[u8], zone: &Mutex<Zone>, transport: Transport) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_queries(request.queries.iter().cloned());
    let limit = match &request.edns {
        Some(edns) => {
            let mut reply_edns = Edns::new();
            reply_edns.set_max_payload(1232);
            response.set_edns(reply_edns);
            usize::from(edns.max_payload().max(512))
        }
        None => CLASSIC_UDP_LIMIT,
    };

    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response.to_vec().ok();
    };
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response.to_vec().ok();
    }
    let name = key(&query.name().to_ascii());
    let record_type = query.query_type();
    let mut zone = lock(zone);
    let seen = zone.queries.entry((name.clone(), record_type)).or_insert(0);
    let nth = *seen;
    *seen += 1;

    let known = zone.addresses.contains_key(&name) || zone.txt.contains_key(&name);
    if !known {
        response.metadata.response_code = ResponseCode::NXDomain;
        return response.to_vec().ok();
    }
    let owner = query.name().clone();
    let rdata: Vec<RData> = match record_type {
        RecordType::A | RecordType::AAAA => {
            let sets = zone.addresses.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            let index = usize::try_from(nth).unwrap_or(0) % sets.len().max(1);
            sets.get(index)
                .into_iter()
                .flatten()
                .filter_map(|ip| match (ip, record_type) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .collect()
        }
        RecordType::TXT => zone
            .txt
            .get(&name)
            .into_iter()
            .flatten()
            .map(|value| RData::TXT(TXT::from_bytes(value.as_bytes().chunks(255).collect())))
            .collect(),
        _ => Vec::new(),
    };
    drop(zone);
    response.add_answers(
        rdata
            .into_iter()
            .map(|data| Record::from_rdata(owner.clone(), 0, data)),
    );
    let encoded = response.to_vec().ok()?;
    if transport == Transport::Udp && encoded.len() > limit {
        // Too big for this client's UDP: say so, and let it retry over TCP.
        response.answers.clear();
        response.metadata.truncation = true;
        return response.to_vec().ok();
    }
    Some(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn ask(server: &FakeDns, name: &str, record_type: RecordType) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        socket
            .send_to(&query.to_vec().unwrap(), server.addr())
            .unwrap();
        let mut buf = [0u8; 4096];
        let (len, _) = socket.recv_from(&mut buf).unwrap();
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(reply.metadata.id, query.metadata.id);
        reply
    }

    fn ask_tcp(server: &FakeDns, name: &str, record_type: RecordType) -> Message {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        let bytes = query.to_vec().unwrap();
        stream
            .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
            .unwrap();
        stream.write_all(&bytes).unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).unwrap();
        Message::from_vec(&reply).unwrap()
    }

    fn addresses(reply: &Message) -> Vec<IpAddr> {
        reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn dns_serves_a_aaaa_and_nxdomain() {
        let dns = FakeDns::start();
        dns.set_a(
            "Host.Test",
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        );
        let a = ask(&dns, "host.test.", RecordType::A);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&a), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let aaaa = ask(&dns, "HOST.test.", RecordType::AAAA);
        assert_eq!(addresses(&aaaa), vec!["::1".parse::<IpAddr>().unwrap()]);
        let txt = ask(&dns, "host.test.", RecordType::TXT);
        assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
        assert!(txt.answers.is_empty());
        let missing = ask(&dns, "other.test.", RecordType::A);
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(dns.queries("host.test", "A"), 1);
        assert_eq!(dns.queries("host.test", "AAAA"), 1);
        assert_eq!(dns.queries("other.test", "A"), 1);
        dns.remove("host.test");
        let gone = ask(&dns, "host.test.", RecordType::A);
        assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn dns_alternates_for_rebinding() {
        let dns = FakeDns::start();
        let first: IpAddr = "127.0.0.2".parse().unwrap();
        let second: IpAddr = "127.0.0.3".parse().unwrap();
        dns.set_a_alternating("rebind.test", vec![first], vec![second]);
        let answers: Vec<_> = (0..4)
            .map(|_| addresses(&ask(&dns, "rebind.test.", RecordType::A)))
            .collect();
        assert_eq!(
            answers,
            vec![vec![first], vec![second], vec![first], vec![second]]
        );
    }

    #[test]
    fn dns_serves_txt_over_udp_and_tcp() {
        let dns = FakeDns::start();
        let long = "x".repeat(300);
        dns.set_txt("_acme-challenge.a.test", vec!["abc".into(), long.clone()]);
        for reply in [
            ask(&dns, "_acme-challenge.a.test.", RecordType::TXT),
            ask_tcp(&dns, "_acme-challenge.a.test.", RecordType::TXT),
        ] {
            let values: Vec<Vec<u8>> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect();
            assert_eq!(values, vec![b"abc".to_vec(), long.clone().into_bytes()]);
        }
    }

    #[test]
    fn dns_truncates_oversized_udp_answers() {
        let dns = FakeDns::start();
        dns.set_txt("big.test", vec!["y".repeat(200); 5]);
        let reply = ask(&dns, "big.test.", RecordType::TXT);
        assert!(reply.metadata.truncation);
        assert!(reply.answers.is_empty());
        assert_eq!(ask_tcp(&dns, "big.test.", RecordType::TXT).answers.len(), 5);
    }

    #[test]
    fn dns_ignores_garbage_and_stops_on_drop() {
        let dns = FakeDns::start();
        let addr = dns.addr();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(b"not dns", addr).unwrap();
        dns.set_a("still.test", vec!["127.0.0.1".parse().unwrap()]);
        assert_eq!(addresses(&ask(&dns, "still.test.", RecordType::A)).len(), 1);
        drop(dns);
        assert!(TcpStream::connect(addr).is_err());
    }
}
