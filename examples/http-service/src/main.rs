//! `http-service`: the program of the HTTP service example, a tiny std-only HTTP/1.1 server.
//! `GET /` answers `200` with a fixed body; any other path `404`, any other method `405`.
//!
//! Usage: `http-service [ADDRESS:PORT]`, default `0.0.0.0:8080`. One connection at a time, each
//! answered and closed (`Connection: close`); a client that sends nothing for 5 s is dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The body of `GET /`.
pub const BODY: &str = "hello from the fledge http-service example\n";
/// Where the server listens unless told otherwise.
const DEFAULT_ADDRESS: &str = "0.0.0.0:8080";
/// The most a request head (request line + headers) may take.
const MAX_HEAD: u64 = 16 * 1024;

fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
    let listener = match TcpListener::bind(&address) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http-service: cannot listen on {address}: {e}");
            std::process::exit(1);
        }
    };
    println!("http-service: listening on {address}");
    for conn in listener.incoming() {
        if let Err(e) = conn.and_then(serve) {
            eprintln!("http-service: a connection failed: {e}");
        }
    }
}

/// Reads one request from `stream` and writes the answer.
fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = BufReader::new((&stream).take(MAX_HEAD));
    let mut request_line = String::new();
    head.read_line(&mut request_line)?;
    // Skip the headers: everything up to the empty line.
    loop {
        let mut line = String::new();
        if head.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    (&stream).write_all(respond(&request_line).as_bytes())
}

/// The whole response to a request line such as `GET / HTTP/1.1`.
fn respond(request_line: &str) -> String {
    let mut words = request_line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/")) => ("200 OK", BODY),
        (Some("GET"), Some(_)) => ("404 Not Found", "not found\n"),
        _ => ("405 Method Not Allowed", "only GET is served\n"),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respond_answers_get_root_and_refuses_the_rest() {
        let ok = respond("GET / HTTP/1.1\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with(&format!("\r\n\r\n{BODY}")), "{ok}");
        assert!(
            ok.contains(&format!("Content-Length: {}\r\n", BODY.len())),
            "{ok}"
        );
        assert!(respond("GET /x HTTP/1.1").starts_with("HTTP/1.1 404 "));
        assert!(respond("POST / HTTP/1.1").starts_with("HTTP/1.1 405 "));
        assert!(respond("").starts_with("HTTP/1.1 405 "));
    }

    #[test]
    fn serves_a_real_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve(listener.accept().unwrap().0));
        let mut client = TcpStream::connect(address).unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: example\r\nUser-Agent: test\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        server.join().unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(BODY), "{answer}");
    }
}
