//! Python's smtplib (and raw pipelined sockets) against a running mailsink: STARTTLS with
//! an unverified context, AUTH PLAIN and LOGIN, sending, pipelined batches with DATA and
//! BDAT, STARTTLS command injection, a certificate from --tls-cert, implicit TLS.
//! `python3` missing: skipped locally, a failure when CI is set.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{have_tool, output_within, Cert, Options, Server};
use serde_json::Value;

fn python(scenario: &str, addr: std::net::SocketAddr, extra: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/smtp_client.py");
    // The script's sockets time out after 15 s; the whole run is bounded too.
    let out = output_within(
        Command::new("python3")
            .arg(script)
            .args([scenario, &addr.ip().to_string(), &addr.port().to_string()])
            .args(extra),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{scenario} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

fn stored_with(server: &Server, marker: &str) -> Vec<u8> {
    server
        .stored()
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| String::from_utf8_lossy(b).contains(marker))
        .unwrap_or_else(|| panic!("no stored message with {marker}"))
}

#[test]
fn smtplib_sends_and_the_bytes_are_stored_unstuffed() {
    if !have_tool("python3") {
        return;
    }
    let server = Server::start(&[]);
    let out = python("send_plain", server.addr, &[]);
    assert_eq!(out["refused"], serde_json::json!({}));
    assert_eq!(out["noop"], 250);
    let stored = stored_with(&server, "smtplib plain");
    assert_eq!(stored, out["body"].as_str().unwrap().as_bytes());
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["envelope"]["recipients"].as_array().unwrap().len(), 2);
    assert_eq!(line["connection"]["helo"]["host"], "py.example");
}

#[test]
fn smtplib_starttls_and_auth() {
    if !have_tool("python3") {
        return;
    }
    let server = Server::start(&["--user", "bob:hunter2", "--user", "carol:x"]);
    let out = python("starttls_auth", server.addr, &["bob", "hunter2"]);
    assert_eq!(out["starttls_offered"], true);
    assert_eq!(out["auth_before_tls"], false, "AUTH only over TLS");
    assert_eq!(out["starttls"], 220);
    assert_eq!(
        out["auth_after_tls"].as_str().unwrap().trim(),
        "PLAIN LOGIN"
    );
    assert_eq!(out["wrong"], 535);
    assert_eq!(out["login"], 235);
    assert_eq!(out["login_mech"], 235);
    assert_eq!(
        stored_with(&server, "smtplib tls auth"),
        b"Subject: smtplib tls auth\r\n\r\nsecret\r\n"
    );
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["connection"]["auth"]["username"], "bob");
    assert_eq!(line["connection"]["tls"]["protocol"], out["version"]);
    // Python names suites the OpenSSL way; for TLS 1.3 both names end the same.
    let cipher = line["connection"]["tls"]["cipher"].as_str().unwrap();
    assert!(
        cipher.ends_with(out["cipher"].as_str().unwrap().trim_start_matches("TLS_")),
        "{cipher} vs {}",
        out["cipher"]
    );
    // Both connections logged their end, with the auth in the second's context.
    let ends = server.wait_events("disconnect", 2);
    assert!(ends
        .iter()
        .any(|l| l["connection"]["auth"]["mechanism"] == "LOGIN"));
}

#[test]
fn the_auth_plain_policy_event_decides_credentials() {
    if !have_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("auth.lua");
    std::fs::write(
        &policy,
        "kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)\n  return authc == 'bob' and password == 'hunter2'\nend)\n",
    )
    .unwrap();
    let server = Server::start(&["--policy", policy.to_str().unwrap()]);
    let out = python("starttls_auth", server.addr, &["bob", "hunter2"]);
    assert_eq!(out["wrong"], 535);
    assert_eq!(out["login"], 235);
    assert_eq!(out["login_mech"], 235);
}

#[test]
fn raw_pipelined_batches_with_data_and_bdat() {
    if !have_tool("python3") {
        return;
    }
    let server = Server::start(&[]);
    let out = python("pipelined", server.addr, &[]);
    assert_eq!(out["greeting"], "220 mx.test ESMTP");
    assert_eq!(
        out["batch1"],
        serde_json::json!(["250", "250", "250", "501", "250", "354"])
    );
    assert_eq!(
        out["batch2"],
        serde_json::json!(["250", "250", "250", "250", "221"])
    );
    assert_eq!(out["after_quit"], "");
    let stored = server.stored();
    assert_eq!(stored.len(), 2);
    let bodies: Vec<&[u8]> = stored.iter().map(|(_, b)| b.as_slice()).collect();
    assert!(bodies.contains(&&b"Subject: pipelined\r\n\r\nfirst\r\n"[..]));
    assert!(bodies.contains(&&b"Subject: bdat\r\n\r\nbinary\x00\r\n.\r\n"[..]));
    let lines = server.wait_events("message", 2);
    let first = lines.iter().find(|l| l["chunked"] == false).unwrap();
    assert_eq!(first["envelope"]["recipients"].as_array().unwrap().len(), 2);
}

#[test]
fn commands_pipelined_after_starttls_never_run() {
    if !have_tool("python3") {
        return;
    }
    let server = Server::start(&[]);
    let out = python("starttls_injection", server.addr, &[]);
    assert!(out["starttls"].as_str().unwrap().starts_with("220 2.0.0"));
    // The injected MAIL FROM was dropped: RCPT has no transaction (and HELO is reset).
    assert!(
        out["rcpt_after_tls"].as_str().unwrap().starts_with("503"),
        "{out}"
    );
    assert!(out["quit"].as_str().unwrap().starts_with("221"));
}

#[test]
fn tls_cert_and_key_from_pem_files_are_used() {
    if !have_tool("python3") {
        return;
    }
    // smtplib checks the name it connected to: 127.0.0.1.
    let cert = Cert::self_signed(&["localhost", "127.0.0.1"]);
    let server = Server::start(&cert.args());
    // Verification against exactly this certificate succeeds.
    let out = python("verify_cert", server.addr, &[cert.pem.to_str().unwrap()]);
    assert_eq!(out["verified"], true);
    assert_eq!(out["peer_der_len"], cert.der.len());
    assert_eq!(
        stored_with(&server, "verified"),
        b"Subject: verified\r\n\r\nok\r\n"
    );
}

#[test]
fn smtplib_over_implicit_tls() {
    if !have_tool("python3") {
        return;
    }
    let server = Server::start_with(Options {
        args: vec![],
        env: vec![],
        implicit_tls: true,
    });
    let out = python("implicit_tls", server.tls_addr.unwrap(), &[]);
    assert!(out["version"].as_str().unwrap().starts_with("TLSv1."));
    assert_eq!(
        stored_with(&server, "smtps"),
        b"Subject: smtps\r\n\r\nimplicit\r\n"
    );
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["connection"]["serverid"], "smtps");
    assert_eq!(line["connection"]["tls"]["protocol"], out["version"]);
}

#[test]
fn proxy_header_then_implicit_tls_in_one_write() {
    if !have_tool("python3") {
        return;
    }
    let server = Server::start_with(Options {
        args: vec!["--proxy-protocol".into()],
        env: vec![],
        implicit_tls: true,
    });
    let out = python("proxy_implicit_tls", server.tls_addr.unwrap(), &[]);
    assert_eq!(out["greeting"], "220 mx.test ESMTP\r\n");
    assert!(
        out["ehlo"].as_str().unwrap().starts_with("250-mx.test"),
        "{out}"
    );
    assert!(out["quit"].as_str().unwrap().starts_with("221"));
    let line = &server.wait_events("disconnect", 1)[0];
    assert_eq!(line["connection"]["remoteip"], "192.0.2.7");
    assert_eq!(line["connection"]["remoteport"], 5555);
    assert_eq!(line["connection"]["tls"]["protocol"], out["version"]);
}
