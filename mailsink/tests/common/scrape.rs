//! Scraping mailsink's `--metrics` endpoint in tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::WAIT;

/// A port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GET /metrics: every sample by its name and labels as written (`name{label="v"}`).
pub fn scrape(port: u16) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to --metrics");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("NAME VALUE");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// Scrapes until `name` has `value` (connections end a little after the client saw the
/// close), bounded by WAIT; returns that scrape.
pub fn scrape_until(port: u16, name: &str, value: f64) -> BTreeMap<String, f64> {
    let start = Instant::now();
    loop {
        let metrics = scrape(port);
        if metrics.get(name) == Some(&value) || start.elapsed() > WAIT {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
