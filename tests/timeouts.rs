//! Timeouts (SPEC section 9): the caller owns the clock, the session reports its deadline
//! through `poll_timeout`, a timeout handled early does nothing, and no deadline runs while a
//! hook is pending.

mod common;
use common::*;

use std::time::Duration;

use smtp_session::{Config, Decision, Hooks, MinDataRate, Output, Session};

const MIN: Duration = Duration::from_secs(60);
const SEC: Duration = Duration::from_secs(1);

#[test]
fn the_command_timeout_is_five_minutes_then_421_4_4_2() {
    let mut h = Harness::new(config());
    let t0 = h.now;
    assert_eq!(h.session.poll_timeout(), Some(t0 + 5 * MIN));
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.advance(5 * MIN - SEC);
    assert_eq!(h.transcript, "", "nothing happens before the deadline");
    h.advance(SEC);
    h.expect(
        "-- timeout
         S: 421 4.4.2 mx.example Error: timeout exceeded
         -- close
         H: disconnect close=local reply=421 4.4.2 timeout",
    );
    assert_eq!(h.session.poll_timeout(), None, "no deadline after close");
    assert_eq!(
        h.session.handle_timeout(h.now + MIN),
        Err(smtp_session::Error::Closed)
    );
}

#[test]
fn every_command_pushes_the_deadline() {
    let mut h = Harness::new(config());
    h.advance(4 * MIN);
    h.send("HELO c\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));
    h.advance(4 * MIN);
    h.send("NOOP\r\n");
    h.advance(4 * MIN);
    assert_eq!(h.closes, 0, "12 minutes, but never 5 without a command");
    h.transcript.clear();
    h.advance(MIN);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: timeout exceeded"]
    );
}

#[test]
fn an_early_timeout_call_does_nothing() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    let deadline = h.session.poll_timeout().unwrap();
    h.transcript.clear();
    for early in [h.now, h.now + MIN, deadline - Duration::from_nanos(1)] {
        h.session.handle_timeout(early).unwrap();
        assert!(h.session.poll_output().is_none());
        assert_eq!(
            h.session.poll_timeout(),
            Some(deadline),
            "an early call does not move the deadline"
        );
    }
    // Nor does a call from the past.
    h.session.handle_timeout(h.now - SEC).unwrap();
    assert!(h.session.poll_output().is_none());
    // And the session still works.
    h.send("NOOP\r\n");
    assert_eq!(h.server_lines(), ["250 2.0.0 OK"]);
}

#[test]
fn a_late_timeout_call_fires_once() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.closes, 1);
    assert_eq!(h.disconnects, 1);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: timeout exceeded"]
    );
}

#[test]
fn the_data_timeout_is_three_minutes_between_reads() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 3 * MIN));
    // Every read of message data pushes the deadline by three minutes.
    for _ in 0..5 {
        h.advance(3 * MIN - SEC);
        h.feed(b"more text\r\n");
        assert_eq!(h.session.poll_timeout(), Some(h.now + 3 * MIN));
    }
    // A partial line is a read too.
    h.advance(2 * MIN);
    h.feed(b"no line end yet");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 3 * MIN));
    assert_eq!(h.closes, 0);
    h.transcript.clear();
    h.advance(3 * MIN);
    h.expect(
        "-- timeout
         S: 421 4.4.2 mx.example Error: timeout exceeded
         -- close
         H: disconnect close=local reply=421 4.4.2 timeout",
    );
    assert!(
        h.messages.is_empty(),
        "an unfinished message is not delivered"
    );
}

#[test]
fn after_the_final_dot_the_command_timeout_applies_again() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    let data_deadline = h.session.poll_timeout().unwrap();
    assert_eq!(data_deadline, h.now + 3 * MIN);
    h.advance(MIN);
    h.send("hi\r\n.\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));
    h.advance(4 * MIN);
    assert_eq!(
        h.closes, 0,
        "past the data deadline, within the command one"
    );
}

#[test]
fn the_data_timeout_applies_between_bdat_reads() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 100\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 3 * MIN));
    h.advance(2 * MIN);
    h.feed(&[b'x'; 60]);
    assert_eq!(h.session.poll_timeout(), Some(h.now + 3 * MIN));
    h.advance(2 * MIN);
    h.feed(&[b'x'; 40]);
    // The chunk is complete: a command is awaited again.
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));
    h.send("BDAT 10 LAST\r\n12345");
    h.transcript.clear();
    h.advance(3 * MIN);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: timeout exceeded"]
    );
    assert!(h.messages.is_empty());
}

#[test]
fn timeouts_are_configurable() {
    let config = Config {
        command_timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(2),
        ..config()
    };
    let mut h = Harness::new(config);
    assert_eq!(h.session.poll_timeout(), Some(h.now + 10 * SEC));
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 2 * SEC));
    h.transcript.clear();
    h.advance(2 * SEC);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: timeout exceeded"]
    );
}

#[test]
fn no_deadline_while_a_hook_is_pending() {
    let config = Config {
        hooks: Hooks {
            mail_from: true,
            message: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    assert_eq!(h.session.poll_timeout(), None);
    // The runtime bounds its own hooks: a day passes and nothing happens.
    h.transcript.clear();
    h.advance(Duration::from_secs(86_400));
    assert_eq!(h.transcript, "");
    h.decide(Decision::Accept);
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));

    // The same at the end of data: the message hook may take long.
    h.send("RCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\n");
    assert_eq!(h.session.poll_timeout(), None);
    h.advance(Duration::from_secs(86_400));
    assert_eq!(h.closes, 0);
    h.decide(Decision::Accept);
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));
    assert_eq!(h.server_lines().last(), Some(&"250 2.0.0 Message accepted"));
}

#[test]
fn no_deadline_while_the_connect_hook_is_pending() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let now = start();
    let mut s = Session::new(config, info(), now);
    let Some(Output::HookCall(call)) = s.poll_output() else {
        panic!("connect hook")
    };
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(now + Duration::from_secs(86_400)).unwrap();
    assert!(s.poll_output().is_none());
    let later = now + 10 * MIN;
    s.decide(call.id, Decision::Accept, later).unwrap();
    assert_eq!(s.poll_timeout(), Some(later + 5 * MIN));
}

#[test]
fn a_run_loop_driven_by_poll_timeout_alone_closes_idle_sessions() {
    // The runtime sleeps until the reported deadline and reports it: nothing more.
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    h.transcript.clear();
    let mut wakeups = 0;
    for _ in 0..10 {
        let Some(deadline) = h.session.poll_timeout() else {
            break;
        };
        wakeups += 1;
        h.now = deadline;
        h.session.handle_timeout(deadline).unwrap();
        h.drain();
    }
    assert_eq!(wakeups, 1, "one wakeup, at the data deadline");
    assert_eq!(h.closes, 1);
    assert_eq!(h.disconnects, 1);
}

#[test]
fn the_timeout_reply_is_the_last_reply_of_the_context() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.advance(5 * MIN);
    let reply = h.context().arguments.reply.clone().unwrap();
    assert_eq!(reply.code, 421);
    assert_eq!(
        reply.enhanced,
        Some(smtp_session::EnhancedCode::new(4, 4, 2))
    );
    assert_eq!(reply.state, smtp_session::ReplyState::Timeout);
    assert_eq!(h.context().arguments.close, smtp_session::CloseSide::Local);
}

// ---------------------------------------------------------------------------------------
// The command deadline and the minimum data rate: a slow sender cannot hold a connection
// by trickling bytes, since a read no longer restarts the clock for the whole request.

#[test]
fn a_command_trickled_a_byte_every_two_seconds_is_cut_at_the_command_deadline() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    let line = format!("MAIL FROM:<{}@example.org>\r\n", "a".repeat(200));
    let mut sent = 0;
    for byte in line.bytes() {
        if h.session.is_closed() {
            break;
        }
        h.feed(&[byte]);
        sent += 1;
        h.advance(2 * SEC);
    }
    // 5 minutes at one byte per 2 seconds: 150 bytes, far from the line's end.
    assert_eq!(sent, 150);
    h.expect(
        "-- timeout
         S: 421 4.4.2 mx.example Error: timeout exceeded
         -- close
         H: disconnect close=local reply=421 4.4.2 timeout",
    );
}

#[test]
fn whole_commands_sent_slowly_are_not_cut() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    for _ in 0..10 {
        // Each command line arrives in two halves, 2 minutes apart: 4 minutes per
        // command, 40 minutes in all, and neither the idle timeout nor the deadline fires.
        h.feed(b"NO");
        h.advance(2 * MIN);
        h.feed(b"OP\r\n");
        h.advance(2 * MIN);
    }
    assert_eq!(h.closes, 0);
    assert_eq!(
        h.server_lines()
            .iter()
            .filter(|l| **l == "250 2.0.0 OK")
            .count(),
        10
    );
}

#[test]
fn the_command_deadline_is_configurable_and_counts_from_the_first_byte_of_the_line() {
    let config = Config {
        command_deadline: 30 * SEC,
        ..config()
    };
    let mut h = Harness::new(config);
    h.send("EHLO c\r\nNOOP\r\nNO");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 30 * SEC));
    h.advance(20 * SEC);
    h.feed(b"O");
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + 10 * SEC),
        "a read does not move the deadline of the line"
    );
    h.feed(b"P\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));
    // An overlong line being skipped is still a line being read.
    h.feed(&[b'x'; 2000]);
    h.transcript.clear();
    h.advance(30 * SEC);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: timeout exceeded"]
    );
}

fn min_rate(bytes_per_second: u32, grace: Duration) -> Config {
    Config {
        min_data_rate: Some(MinDataRate {
            bytes_per_second,
            grace,
        }),
        ..config()
    }
}

#[test]
fn message_data_slower_than_the_minimum_rate_is_cut_after_the_grace() {
    let mut h = Harness::new(min_rate(100, 10 * SEC));
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + 10 * SEC),
        "the grace"
    );
    h.transcript.clear();
    // 50 bytes every 2 seconds is 25 bytes/s: each read earns half a second.
    let mut reads = 0;
    while h.closes == 0 && reads < 100 {
        h.feed(&[b'z'; 50]);
        reads += 1;
        h.advance(2 * SEC);
    }
    // After n reads the transfer has earned 10 s + n/2 s and run 2n s: cut at n = 7.
    assert_eq!(reads, 7);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: minimum data rate not met"]
    );
    assert!(h.messages.is_empty());
}

#[test]
fn message_data_at_the_minimum_rate_goes_through() {
    let mut h = Harness::new(min_rate(100, 10 * SEC));
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    for _ in 0..120 {
        h.feed(&[&[b'z'; 198][..], b"\r\n"].concat());
        h.advance(2 * SEC);
    }
    h.send(".\r\n");
    assert_eq!(h.closes, 0, "four minutes at exactly the rate");
    assert_eq!(h.messages.len(), 1);
    // The idle timeout between reads still applies on its own.
    let deadline = h.session.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + 5 * MIN);
}

#[test]
fn the_minimum_rate_counts_per_bdat_chunk() {
    let mut h = Harness::new(min_rate(1000, 5 * SEC));
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.send("BDAT 10000\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * SEC));
    h.feed(&[b'q'; 2000]);
    assert_eq!(h.session.poll_timeout(), Some(h.now + 7 * SEC));
    h.advance(6 * SEC);
    h.feed(&[b'q'; 8000]);
    // The chunk is complete: the next command has the command timeout.
    assert_eq!(h.session.poll_timeout(), Some(h.now + 5 * MIN));
    h.send("BDAT 5000 LAST\r\n");
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + 5 * SEC),
        "a new grace"
    );
    h.transcript.clear();
    h.advance(5 * SEC);
    assert_eq!(
        h.server_lines(),
        ["421 4.4.2 mx.example Error: minimum data rate not met"]
    );
}
