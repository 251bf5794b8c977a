//! Against a real postgrey (`postgrey --inet=127.0.0.1:PORT`, a database directory of the
//! test's own, a 2-second delay): the first attempt of a triplet is deferred, the retry
//! after the delay passes, on one reused connection.

mod common;

use std::time::Duration;

use common::daemon::PolicyConn;
use smtp_filter_proto::policy::{PolicyAction, PolicyRequest, ProtocolState};
use smtp_session_testkit::daemons;

const DELAY: u64 = 2;

fn request(sender: &str, recipient: &str, instance: &str) -> PolicyRequest {
    let mut r = PolicyRequest::new(ProtocolState::Rcpt);
    r.helo_name = "client.example.org".into();
    r.client_address = "192.0.2.7".into();
    r.client_name = "unknown".into();
    r.reverse_client_name = "unknown".into();
    r.sender = sender.into();
    r.recipient = recipient.into();
    r.instance = instance.into();
    r.queue_id = "4XyZ1".into();
    r
}

#[test]
fn postgrey_defers_a_first_attempt_and_passes_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let postgrey = daemons::postgrey(dir.path(), DELAY);
    let port = postgrey.port;
    let mut conn = PolicyConn::open(port);

    let first = conn.ask(&request("alice@example.org", "bob@example.com", "a.1"));
    let PolicyAction::DeferIfPermit(refusal) = &first.action else {
        panic!("first attempt: {first:?}");
    };
    assert!(
        refusal
            .text
            .as_deref()
            .unwrap_or("")
            .starts_with("Greylisted"),
        "{first:?}"
    );

    // Another recipient of the same message is a triplet of its own: deferred too.
    let second = conn.ask(&request("alice@example.org", "carol@example.com", "a.1"));
    assert!(
        matches!(second.action, PolicyAction::DeferIfPermit(_)),
        "{second:?}"
    );

    std::thread::sleep(Duration::from_secs(DELAY + 1));
    let retry = conn.ask(&request("alice@example.org", "bob@example.com", "a.2"));
    match &retry.action {
        PolicyAction::Prepend { name, value } => {
            assert_eq!(name, "X-Greylist");
            assert!(value.contains("delayed"), "{retry:?}");
        }
        PolicyAction::Dunno => {}
        other => panic!("retry after the delay: {other:?}"),
    }
}
