//! `--verify`: SPF, DKIM, DMARC, ARC and iprev for each stored message, against a DNS server
//! the test runs on 127.0.0.1 (hickory-server, in-memory zone) holding the SPF, DKIM,
//! DMARC, PTR and A records, and DKIM keys made here (Ed25519, ring) signing with
//! mail-auth's own signer and sealer.
//!
//! The client connects over loopback and names its address in a PROXY header
//! (192.0.2.10, a documentation address): loopback's reverse name is answered by the
//! resolver itself (RFC 6761), and nothing here needs the internet.

mod common;
#[path = "common/dns.rs"]
mod dns;
#[path = "common/scrape.rs"]
mod scrape;

use std::time::{Duration, Instant};

use base64::Engine;
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput};

use common::{after_trace, run_to_exit, Client, Server, HOSTNAME};
use dns::{DnsServer, Zone};
use scrape::{free_port, scrape_until};

const CLIENT_IP: &str = "192.0.2.10";
const HELO: &str = "mail.sender.example";

/// A message from alice@sender.example, whose domain publishes SPF, a DKIM key and a DMARC
/// `p=reject` policy.
const MESSAGE: &str = "From: Alice <alice@sender.example>\r\n\
    To: bob@mx.test\r\n\
    Subject: quarterly figures\r\n\
    Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\
    Message-ID: <q4@sender.example>\r\n\
    \r\n\
    Hello Bob,\r\n\
    .the figures are attached.\r\n";

/// An Ed25519 key pair: the PKCS#8 document, and the `p=` value of its DNS record.
struct Key {
    pkcs8: Vec<u8>,
    public: String,
}

impl Key {
    fn new() -> Key {
        let pkcs8 = Ed25519Key::generate_pkcs8().expect("an Ed25519 key");
        let public = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap().public_key();
        Key {
            pkcs8,
            public: base64::engine::general_purpose::STANDARD.encode(public),
        }
    }

    fn record(&self) -> String {
        format!("v=DKIM1; k=ed25519; p={}", self.public)
    }

    fn signing(&self) -> Ed25519Key {
        Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap()
    }

    /// `message` with a DKIM-Signature of `domain`, selector `selector`, on top.
    fn sign(&self, domain: &str, selector: &str, message: &str) -> String {
        let signature = DkimSigner::from_key(self.signing())
            .domain(domain)
            .selector(selector)
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .sign(message.as_bytes())
            .expect("a DKIM signature");
        format!("{}{message}", signature.to_header())
    }

    /// `message` with an ARC set of `relay.example` (instance 1, no chain before it) on
    /// top, as a forwarder that found DKIM passing would add it.
    fn seal(&self, message: &str) -> String {
        let parsed = AuthenticatedMessage::parse(message.as_bytes()).unwrap();
        let results = AuthenticationResults::new("relay.example")
            .with_dkim_result(&DkimOutput::pass(), "alice@sender.example");
        let set = ArcSealer::from_key(self.signing())
            .domain("relay.example")
            .selector("arc")
            .headers(["From", "To", "Subject", "DKIM-Signature"])
            .seal(&parsed, &results, &ArcOutput::default())
            .expect("an ARC set");
        format!("{}{message}", set.to_header())
    }
}

/// The sender's world: its mail server's PTR and A records, SPF for the HELO name and for
/// sender.example (192.0.2.10 only), the DKIM key `s1`, DMARC `p=reject`; and
/// bounces.example, another domain whose SPF lets the same server send.
fn sender_zone(key: &Key) -> Zone {
    Zone::new()
        .ptr(CLIENT_IP.parse().unwrap(), HELO)
        .a(HELO, CLIENT_IP.parse().unwrap())
        .txt(HELO, "v=spf1 a -all")
        .txt("sender.example", "v=spf1 ip4:192.0.2.10 -all")
        .txt("s1._domainkey.sender.example", &key.record())
        .txt("_dmarc.sender.example", "v=DMARC1; p=reject")
        .txt("bounces.example", "v=spf1 ip4:192.0.2.10 -all")
}

fn mailsink(dns: &DnsServer, extra: &[&str]) -> Server {
    let addr = dns.arg();
    let mut args = vec!["--proxy-protocol", "--verify", "--dns-server", &addr];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// One connection from 192.0.2.10 (EHLO mail.sender.example) sending `message` from
/// `mail_from` to bob@mx.test; returns the reply to the data.
fn send(server: &Server, mail_from: &str, message: &str) -> String {
    let mut c = Client::connect(server.addr);
    c.send(format!("PROXY TCP4 {CLIENT_IP} 198.51.100.1 40000 25\r\n"));
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    let ehlo = c.cmd(&format!("EHLO {HELO}"));
    assert!(ehlo.starts_with(&format!("250-{HOSTNAME} ")), "{ehlo}");
    let reply = c.send_message(mail_from, &["bob@mx.test"], message.as_bytes());
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    reply
}

/// The `Authentication-Results:` field below the trace fields of the stored `file`
/// (unfolded), after checking that the message follows it unchanged.
fn results_field(file: &[u8], message: &str) -> String {
    let rest = after_trace(file);
    let prefix = format!("Authentication-Results: {HOSTNAME};");
    assert!(
        rest.starts_with(prefix.as_bytes()),
        "no Authentication-Results field below the trace fields: {}",
        String::from_utf8_lossy(rest)
    );
    let mut end = 0;
    loop {
        end += rest[end..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        if !matches!(rest.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&rest[end..]),
        message,
        "the message after the field"
    );
    let field = String::from_utf8(rest[..end].to_vec()).unwrap();
    assert!(field.split("\r\n").all(|line| line.len() <= 998), "{field}");
    field.replace("\r\n", "")
}

/// `method=result` of each resinfo, in order (RFC 8601 section 2.2), from an unfolded field.
fn methods(field: &str) -> Vec<String> {
    field
        .split(';')
        .skip(1)
        .map(|resinfo| {
            resinfo
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The one message stored, its Authentication-Results field and its log line's `auth`.
fn the_stored_message(server: &Server, message: &str) -> (String, serde_json::Value) {
    let line = server.wait_events("message", 1).pop().unwrap();
    let stored = server.stored_files();
    assert_eq!(stored.len(), 1, "one message in new/");
    (results_field(&stored[0].1, message), line["auth"].clone())
}

#[test]
fn a_message_signed_and_sent_by_its_domain_passes_everything() {
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let metrics = free_port();
    let server = mailsink(&dns, &["--metrics", &format!("127.0.0.1:{metrics}")]);

    let signed = key.sign("sender.example", "s1", MESSAGE);
    let reply = send(&server, "alice@sender.example", &signed);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");

    let (field, auth) = the_stored_message(&server, &signed);
    assert_eq!(
        methods(&field),
        [
            "spf=pass",
            "spf=pass",
            "dkim=pass",
            "arc=none",
            "dmarc=pass",
            "iprev=pass"
        ],
        "{field}"
    );
    for detail in [
        "smtp.helo=mail.sender.example",
        "smtp.mailfrom=alice@sender.example",
        "header.d=sender.example header.s=s1",
        "header.from=sender.example policy.dmarc=reject",
        "policy.iprev=192.0.2.10",
    ] {
        assert!(field.contains(detail), "{detail} in {field}");
    }
    assert_eq!(
        auth,
        serde_json::json!({
            "spf": "pass",
            "spf_helo": "pass",
            "dkim": [{"result": "pass", "domain": "sender.example", "selector": "s1"}],
            "dmarc": "pass",
            "dmarc_policy": "reject",
            "arc": "none",
            "iprev": "pass",
            "timed_out": false,
        })
    );
    // Each check's result is counted for the operator's dashboards.
    let result = |method: &str, result: &str| {
        format!("mailsink_authentication_results_total{{method=\"{method}\",result=\"{result}\"}}")
    };
    let samples = scrape_until(metrics, &result("iprev", "pass"), 1.0);
    for method in ["spf", "spf_helo", "dkim", "dmarc", "iprev"] {
        assert_eq!(
            samples.get(&result(method, "pass")),
            Some(&1.0),
            "{method}: {samples:#?}"
        );
    }
    assert_eq!(samples.get(&result("arc", "none")), Some(&1.0));
}

#[test]
fn fields_in_this_hosts_name_that_came_with_the_message_are_removed() {
    // RFC 8601 section 5: only this host writes Authentication-Results in its own name, so
    // one that arrives with the message is a forgery meant to vouch for it further in.
    // Another host's field stays. Small messages are put right in memory; a large one was
    // already written to tmp/ when the field is found.
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let forged = format!(
        "Authentication-Results: {HOSTNAME};\r\n\tdkim=pass header.d=bank.example;\r\n\tdmarc=pass\r\n"
    );
    let forged_again = format!("authentication-results: (spoofed) {HOSTNAME}; spf=pass\r\n");
    let kept = "Authentication-Results: relay.example; spf=pass\r\n";
    for filler_lines in [0, 2_000] {
        let server = mailsink(&dns, &[]);
        let filler = "0123456789".repeat(7).to_string() + "\r\n";
        let body = MESSAGE.to_string() + &filler.repeat(filler_lines);
        let message = format!("{forged}{kept}{forged_again}{body}");
        let reply = send(&server, "alice@sender.example", &message);
        assert!(reply.starts_with("250 2.0.0 "), "{reply}");
        let (field, _) = the_stored_message(&server, &format!("{kept}{body}"));
        // The message's own verdict is this host's, made from what it checked.
        assert!(
            methods(&field).contains(&"dkim=none".to_string()),
            "{field}"
        );
        assert!(!field.contains("bank.example"), "{field}");
    }
}

#[test]
fn a_body_changed_after_signing_fails_dkim_and_dmarc_when_spf_is_not_aligned() {
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let server = mailsink(&dns, &[]);

    let signed = key.sign("sender.example", "s1", MESSAGE);
    let tampered = signed.replace("Hello Bob,", "Hello Bob, please pay invoice 1234,");
    assert_ne!(signed, tampered);
    // The envelope sender's domain passes SPF, but it is not the From: domain.
    let reply = send(&server, "bounce@bounces.example", &tampered);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");

    let (field, auth) = the_stored_message(&server, &tampered);
    assert_eq!(
        methods(&field),
        [
            "spf=pass",
            "spf=pass",
            "dkim=fail",
            "arc=none",
            "dmarc=fail",
            "iprev=pass"
        ],
        "{field}"
    );
    assert!(
        field.contains("smtp.mailfrom=bounce@bounces.example"),
        "{field}"
    );
    assert_eq!(auth["dkim"][0]["result"], "fail");
    assert_eq!(auth["dmarc"], "fail");
    assert_eq!(auth["dmarc_policy"], "reject");
}

#[test]
fn no_spf_record_is_none_and_a_missing_dkim_key_is_permerror() {
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let server = mailsink(&dns, &[]);

    // nothing.example publishes no record at all; its signature names a selector whose
    // key is not in DNS. RFC 7208 section 4.5: no SPF record is "none". RFC 6376 section
    // 6.1.2: a key record that does not exist is PERMFAIL, "permerror" in RFC 8601.
    let message = MESSAGE.replace("alice@sender.example", "carol@nothing.example");
    let signed = key.sign("nothing.example", "gone", &message);
    let reply = send(&server, "carol@nothing.example", &signed);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");

    let (field, auth) = the_stored_message(&server, &signed);
    assert_eq!(
        methods(&field),
        [
            "spf=pass", // the HELO name's record
            "spf=none",
            "dkim=permerror",
            "arc=none",
            "dmarc=none",
            "iprev=pass"
        ],
        "{field}"
    );
    assert_eq!(auth["spf"], "none");
    assert_eq!(auth["spf_helo"], "pass");
    assert_eq!(
        auth["dkim"],
        serde_json::json!([{"result": "permerror", "domain": "nothing.example", "selector": "gone"}])
    );
    assert_eq!(auth["dmarc"], "none");
    let asked = dns.queries();
    assert!(
        asked.contains(&"gone._domainkey.nothing.example. TXT".to_string()),
        "{asked:?}"
    );
}

#[test]
fn a_dns_server_that_never_answers_gives_temperror_within_the_verify_timeout() {
    let key = Key::new();
    let dns = DnsServer::silent();
    // Each lookup would take its three seconds (more with retries, one after another):
    // only the verification's own two seconds bound the message.
    let server = mailsink(&dns, &["--dns-timeout", "3", "--verify-timeout", "2"]);

    let signed = key.sign("sender.example", "s1", MESSAGE);
    let mut c = Client::connect(server.addr);
    c.send(format!("PROXY TCP4 {CLIENT_IP} 198.51.100.1 40000 25\r\n"));
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    assert!(c.cmd(&format!("EHLO {HELO}")).starts_with("250-"));
    c.cmd("MAIL FROM:<alice@sender.example>");
    c.cmd("RCPT TO:<bob@mx.test>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(common::dot_stuff(signed.as_bytes()));
    let sent = Instant::now();
    c.send(b".\r\n");
    let reply = c.reply();
    let waited = sent.elapsed();
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    // The verification's two seconds, and less than two more for the rest.
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    let (field, auth) = the_stored_message(&server, &signed);
    assert_eq!(
        methods(&field),
        [
            "spf=temperror",
            "spf=temperror",
            "dkim=temperror",
            "arc=none",
            "dmarc=temperror",
            "iprev=temperror"
        ],
        "{field}"
    );
    assert_eq!(auth["timed_out"], true);
    assert!(!dns.queries().is_empty(), "the server was asked");
}

#[test]
fn a_policy_rejects_a_dmarc_failure_with_550_and_stores_nothing_of_it() {
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let script = tempfile::tempdir().unwrap();
    let policy = script.path().join("dmarc.lua");
    std::fs::write(
        &policy,
        r#"
        local kumo = require 'kumo'
        -- The results are there at smtp_server_data already (an error here would be a
        -- 421 for the client).
        kumo.on('smtp_server_data', function(msg)
          msg:set_meta('iprev', msg:auth_results().iprev)
        end)
        kumo.on('smtp_server_message_received', function(msg)
          assert(msg:get_meta('iprev') == 'pass', msg:get_meta('iprev'))
          local auth = msg:auth_results()
          if auth.dmarc == 'fail' and auth.dmarc_policy == 'reject' then
            kumo.reject(550, '5.7.1 DMARC policy of the sender domain (dkim=' ..
              auth.dkim[1].result .. ', spf=' .. auth.spf .. ')')
          end
          assert(auth.header:find('^Authentication%-Results: mx%.test;'), auth.header)
        end)
        "#,
    )
    .unwrap();
    let server = mailsink(&dns, &["--policy", policy.to_str().unwrap()]);

    let signed = key.sign("sender.example", "s1", MESSAGE);
    let tampered = signed.replace("Hello Bob,", "Hello Bob, new bank details:");
    assert_eq!(
        send(&server, "bounce@bounces.example", &tampered),
        "550 5.7.1 DMARC policy of the sender domain (dkim=fail, spf=pass)\r\n"
    );
    assert!(
        server.stored_files().is_empty(),
        "the refused message is not stored"
    );

    // The same sender, untouched: the header check in the script passes too.
    let reply = send(&server, "alice@sender.example", &signed);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let (field, _) = the_stored_message(&server, &signed);
    assert!(field.contains("dmarc=pass"), "{field}");
}

#[test]
fn an_arc_chain_sealed_by_a_forwarder_passes_and_a_change_after_it_fails() {
    let key = Key::new();
    let relay_key = Key::new();
    let dns = DnsServer::start(
        sender_zone(&key).txt("arc._domainkey.relay.example", &relay_key.record()),
    );
    let server = mailsink(&dns, &[]);

    // A list server adds a footer (breaking the author's DKIM signature), then seals.
    let signed = key.sign("sender.example", "s1", MESSAGE);
    let forwarded = format!("{signed}-- \r\nThe figures list\r\n");
    let sealed = relay_key.seal(&forwarded);
    assert!(sealed.starts_with("ARC-Seal: "), "{sealed}");
    let reply = send(&server, "alice@sender.example", &sealed);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let (field, auth) = the_stored_message(&server, &sealed);
    assert!(field.contains("arc=pass"), "{field}");
    assert!(field.contains("dkim=fail"), "{field}");
    assert_eq!(auth["arc"], "pass");

    // Changed after the seal: the chain no longer verifies.
    let server = mailsink(&dns, &[]);
    let changed = sealed.replace("The figures list", "The figures list (edited)");
    send(&server, "alice@sender.example", &changed);
    let (field, auth) = the_stored_message(&server, &changed);
    assert!(field.contains("arc=fail"), "{field}");
    assert_eq!(auth["arc"], "fail");
}

#[test]
fn verify_needs_dns_and_a_maildir_and_says_so_at_start() {
    let (status, stderr) = run_to_exit(&["--verify", "--no-dns"]);
    assert!(!status.success());
    assert!(
        stderr.contains("--verify checks senders in DNS: it cannot be used with --no-dns"),
        "{stderr}"
    );
    let (status, stderr) = run_to_exit(&["--verify", "--discard", "--dns-server", "127.0.0.1:9"]);
    assert!(!status.success());
    assert!(
        stderr.contains("it cannot be used with --discard or --relay"),
        "{stderr}"
    );
}

#[test]
fn a_message_larger_than_what_is_gathered_in_memory_is_verified_from_its_spool_file() {
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let server = mailsink(&dns, &[]);

    // 2 MiB of body: the spool's file exists long before the end, so the field goes into
    // the file after the trace fields, and the body is read back from it.
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let big = format!("{MESSAGE}{}", line.repeat(2 * 1024 * 1024 / line.len()));
    let signed = key.sign("sender.example", "s1", &big);
    let reply = send(&server, "alice@sender.example", &signed);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");

    // results_field checks that the whole message follows the field, byte for byte.
    let (field, auth) = the_stored_message(&server, &signed);
    assert!(field.contains("dkim=pass"), "{field}");
    assert!(field.contains("dmarc=pass"), "{field}");
    assert_eq!(auth["dkim"][0]["result"], "pass");
}

#[test]
fn this_hosts_name_quoted_or_after_a_comment_with_a_quoted_pair_is_removed_too() {
    // RFC 8601's authserv-id is a token or a quoted-string, after comments that nest and
    // may hold quoted-pairs: every spelling a reader takes for this host's goes.
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let server = mailsink(&dns, &[]);
    let forged = format!(
        "Authentication-Results: \"{HOSTNAME}\"; dkim=pass header.d=bank.example\r\n\
         Authentication-Results: (a \\) b) {HOSTNAME}; dmarc=pass header.from=bank.example\r\n\
         Authentication-Results: (a (nested) \\( one)\r\n\t\"{}\"; spf=pass\r\n",
        HOSTNAME.to_uppercase()
    );
    let kept = "Authentication-Results: \"relay.example\"; spf=pass\r\n";
    let reply = send(
        &server,
        "alice@sender.example",
        &format!("{forged}{kept}{MESSAGE}"),
    );
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let (field, _) = the_stored_message(&server, &format!("{kept}{MESSAGE}"));
    assert!(!field.contains("bank.example"), "{field}");
}

#[test]
fn a_header_section_longer_than_verify_max_header_is_refused_and_not_stored() {
    // Its fields could not all be looked through for this host's name.
    let key = Key::new();
    let dns = DnsServer::start(sender_zone(&key));
    let server = mailsink(&dns, &["--verify-max-header", "4096"]);
    let filler = "X-Filler: 0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n".repeat(80);
    let forged = format!("Authentication-Results: {HOSTNAME}; dkim=pass\r\n");
    let message = format!("{filler}{forged}{MESSAGE}");
    let reply = send(&server, "alice@sender.example", &message);
    assert_eq!(
        reply,
        "552 5.3.4 Message header section too large (over 4096 bytes)\r\n"
    );
    assert!(server.stored_files().is_empty());
    assert!(server.events("message").is_empty());

    // A header section within the limit, with a long body, is stored.
    let body = "0123456789\r\n".repeat(1000);
    let message = format!("{forged}{MESSAGE}{body}");
    let reply = send(&server, "alice@sender.example", &message);
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let (field, _) = the_stored_message(&server, &format!("{MESSAGE}{body}"));
    assert!(field.contains("dkim=none"), "{field}");
}
