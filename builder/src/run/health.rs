//! The health check, polled the way Volant's agent polls it (`waitForHealth` in volantvm/volant
//! `internal/agent/app/app.go`): a GET of the manifest's `health_check.endpoint` on the
//! workload's base URL every 50 ms, each request bounded to 5 s, until a 2xx answer; the window
//! is the manifest's `timeout_ms` but never under 2 minutes, as the agent does. Here the URL is
//! the host end of the forwarded port, so a pass means the service answers from the host.
//!
//! QEMU's port forwarder accepts a connection before the guest listens and holds it until the
//! guest answers (its SYN to a guest whose network is not up yet is retried with backoff), so a
//! probe made then can wait out its whole bound though the service came up meanwhile. A probe
//! that has not answered within 250 ms therefore gets company: another probe starts beside it
//! (at most 20 at a time), and the first 2xx of any of them counts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fetch::net::NetLimits;

/// Time between probes.
const INTERVAL: Duration = Duration::from_millis(50);
/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A probe unanswered this long gets another one started beside it.
const STAGGER: Duration = Duration::from_millis(250);
/// Most probes in flight at once: enough that a new one starts every [`STAGGER`] while all
/// are held for their whole bound.
const MAX_IN_FLIGHT: usize = 20;
/// Volant's agent never waits less than this for a workload to become healthy.
pub const MIN_WINDOW: Duration = Duration::from_secs(120);

/// The window the health check gets for a manifest `timeout_ms`.
pub fn window(timeout_ms: i64) -> Duration {
    Duration::from_millis(timeout_ms.max(0) as u64).max(MIN_WINDOW)
}

/// How polling ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// A 2xx answer, this long after polling started.
    Healthy(Duration),
    /// No 2xx answer within the window; the last probe's result.
    Failed(String),
}

/// A poller running on its own thread; dropping it stops the polling.
pub struct Poller {
    stop: Arc<AtomicBool>,
    result: Receiver<Health>,
}

impl Poller {
    /// Starts polling `url` until a 2xx answer, `window` has passed, or it is dropped.
    pub fn start(url: String, window: Duration) -> Poller {
        Poller::start_all(vec![url], window)
    }

    /// Polls each of `urls` in turn until it answers 2xx, all within `window`: healthy when the
    /// last one has answered.
    pub fn start_all(urls: Vec<String>, window: Duration) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, result) = mpsc::channel();
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let start = Instant::now();
            let failed = urls.iter().find_map(|url| {
                match poll(url, window.saturating_sub(start.elapsed()), &flag) {
                    Health::Failed(why) => Some(why),
                    Health::Healthy(_) => None,
                }
            });
            let _ = tx.send(failed.map_or(Health::Healthy(start.elapsed()), Health::Failed));
        });
        Poller { stop, result }
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<Health> {
        self.result.try_recv().ok()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn poll(url: &str, window: Duration, stop: &AtomicBool) -> Health {
    let agent = crate::fetch::net::agent(&NetLimits::probe(PROBE_TIMEOUT), false);
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let start = Instant::now();
    let mut last = format!("{url} did not answer");
    let mut in_flight = 0usize;
    let mut next = start; // when the next probe may start
    while start.elapsed() < window && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next && in_flight < MAX_IN_FLIGHT {
            in_flight += 1;
            next = now + STAGGER;
            let (agent, url, tx) = (agent.clone(), url.to_string(), tx.clone());
            std::thread::spawn(move || {
                let result = match agent.get(&url).call() {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{url} answered {}", r.status())),
                    Err(e) => Err(format!("{url}: {e}")),
                };
                let _ = tx.send(result); // the poll may be over
            });
        }
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => return Health::Healthy(start.elapsed()),
            Ok(Err(e)) => {
                in_flight -= 1;
                last = e;
                if in_flight == 0 {
                    next = Instant::now() + INTERVAL;
                }
            }
            Err(_) => {} // a probe is still out: time for company, if there is room
        }
    }
    Health::Failed(last)
}

/// The URL to probe: `endpoint` (a path) on `http://127.0.0.1:<host_port>`.
pub fn url(host_port: u16, endpoint: &str) -> String {
    let path = endpoint.trim();
    let sep = if path.starts_with('/') { "" } else { "/" };
    format!("http://127.0.0.1:{host_port}{sep}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn window_has_volants_floor() {
        assert_eq!(window(10_000), MIN_WINDOW);
        assert_eq!(window(-5), MIN_WINDOW);
        assert_eq!(window(300_000), Duration::from_secs(300));
    }

    #[test]
    fn url_joins_endpoint() {
        assert_eq!(url(4000, "/healthz"), "http://127.0.0.1:4000/healthz");
        assert_eq!(url(4000, "ready"), "http://127.0.0.1:4000/ready");
    }

    /// A loopback server answering 503 twice, then 200: polling passes on the third probe.
    #[test]
    fn polls_until_a_2xx() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in [
                "503 Service Unavailable",
                "503 Service Unavailable",
                "200 OK",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        let p = Poller::start(url(port, "/"), Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(20);
        let outcome = loop {
            if let Some(o) = p.outcome() {
                break o;
            }
            assert!(Instant::now() < deadline, "no outcome");
            std::thread::sleep(Duration::from_millis(10));
        };
        server.join().unwrap();
        assert!(matches!(outcome, Health::Healthy(_)), "{outcome:?}");
    }

    /// Like QEMU's forwarder before the guest listens: the first connection is accepted and
    /// held unanswered; the next one is answered. It is started beside the held one after the
    /// stagger, not once the held one's 5 s are out.
    #[test]
    fn a_held_probe_gets_company_after_the_stagger() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (held, _) = listener.accept().unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            drop(held);
        });
        let h = poll(
            &url(port, "/"),
            Duration::from_secs(20),
            &AtomicBool::new(false),
        );
        server.join().unwrap();
        let Health::Healthy(after) = h else {
            panic!("{h:?}")
        };
        assert!(
            after >= STAGGER,
            "the second probe started after the stagger: {after:?}"
        );
        assert!(
            after < PROBE_TIMEOUT,
            "not after the first probe's bound: {after:?}"
        );
    }

    #[test]
    fn fails_after_the_window_naming_the_last_error() {
        // A port nobody listens on: bind, note it, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let h = poll(
            &url(port, "/"),
            Duration::from_millis(200),
            &AtomicBool::new(false),
        );
        let Health::Failed(why) = h else {
            panic!("{h:?}")
        };
        assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    }
}
