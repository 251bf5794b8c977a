//! The contenders are only comparable if they do the same work: on small versions of the
//! benchmark inputs, every one of them must receive the same messages.

use std::time::Instant;

use smtp_session::Hooks;
use smtp_session_bench::{
    bdat_wire, body, command_stream, config, data_wire, greeted, in_data, streamed_config,
    with_envelope,
};

#[path = "../common/peers.rs"]
mod peers;

const READ: usize = 1000;

#[test]
fn data_body_is_the_same_for_everyone() {
    let body = body(64 * 1024);
    let wire = data_wire(&body);
    let now = Instant::now();
    let (mut s, mut rt) = in_data(&config(Hooks::ALL), now);
    rt.feed(&mut s, &wire, READ, now);
    assert_eq!((rt.messages, rt.body_bytes), (1, body.len()));
    // smtp-proto counts the last CRLF as part of the terminator.
    assert!(peers::proto_data(&wire, READ) == body[..body.len() - 2]);
    let mut m = peers::Mailin::new();
    m.feed(
        b"HELO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
        READ,
    );
    m.feed(&wire, READ);
    assert_eq!(m.counts.body_bytes.get(), body.len());
    assert!(peers::memcpy_fresh(&wire, READ) == wire);
}

#[test]
fn bdat_body_is_the_same_for_everyone() {
    let body = body(64 * 1024);
    let wire = bdat_wire(&body, 4096);
    let now = Instant::now();
    let (mut s, mut rt) = with_envelope(&config(Hooks::ALL), now);
    rt.feed(&mut s, &wire, READ, now);
    assert_eq!((rt.messages, rt.body_bytes), (1, body.len()));
    let counted = peers::proto_stream(&wire, READ);
    assert_eq!((counted.messages, counted.body_bytes), (1, body.len()));
}

/// The streamed contenders hand out the same body, piece by piece, as the buffered ones.
#[test]
fn streamed_pieces_make_the_same_body() {
    let body = body(256 * 1024);
    let now = Instant::now();
    for (wire, bdat) in [
        (data_wire(&body), false),
        (bdat_wire(&body, 16 * 1024), true),
    ] {
        let (mut s, mut rt) = if bdat {
            with_envelope(&streamed_config(), now)
        } else {
            in_data(&streamed_config(), now)
        };
        rt.spool = Some(Vec::new());
        rt.feed(&mut s, &wire, 16 * 1024, now);
        assert_eq!(rt.messages, 1, "bdat: {bdat}");
        assert!(rt.pieces > 1, "bdat: {bdat}");
        assert!(rt.spool.as_deref() == Some(&body[..]), "bdat: {bdat}");
        let copied = peers::memcpy_fresh(&wire, 16 * 1024);
        let mut reused = Vec::new();
        peers::memcpy_into(&wire, 16 * 1024, &mut reused);
        assert!(copied == wire && reused == wire);
    }
}

#[test]
fn command_stream_is_received_by_everyone() {
    let body = body(1024);
    let stream = command_stream(50, &body);
    let now = Instant::now();
    for hooks in [Hooks::NONE, Hooks::ALL] {
        let (mut s, mut rt) = greeted(&config(hooks), now);
        rt.feed(&mut s, &stream, READ, now);
        assert!(rt.closed);
        if hooks.message {
            assert_eq!((rt.messages, rt.body_bytes), (50, 50 * body.len()));
        }
    }
    let counted = peers::proto_stream(&stream, READ);
    assert_eq!(counted.messages, 50);
    assert_eq!(counted.commands, 1 + 50 * 8 + 1);
    let mut m = peers::Mailin::new();
    m.feed(&stream, READ);
    assert_eq!(m.counts.messages.get(), 50);
    assert_eq!(m.counts.body_bytes.get(), 50 * body.len());
}
