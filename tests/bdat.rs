//! BDAT (RFC 3030 CHUNKING and BINARYMIME): chunks are counted exactly, never parsed, and
//! always consumed, also when they are refused.

mod common;
use common::*;
use smtp_session::{Body, Config, Decision, DisconnectMode, Extensions, Hooks};

/// EHLO, MAIL and RCPT done, transcript cleared; the message hook is answered `Accept`.
fn in_transaction(config: Config) -> Harness {
    let mut h = Harness::new(config);
    h.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h
}

#[test]
fn chunk_bytes_are_counted_exactly_and_never_read_as_commands() {
    let mut h = in_transaction(config());
    h.send("BDAT 11\r\n");
    h.send_data(b"\r\n.\r\nQUIT\r\n");
    h.send("BDAT 0 LAST\r\n");
    h.expect(
        r#"C: BDAT 11
           C= \r\n.\r\nQUIT\r\n
           S: 250 2.0.0 Chunk accepted
           C: BDAT 0 LAST
           H: message from <a@example.org> to <b@example.net> body "\r\n.\r\nQUIT\r\n"
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
    assert_eq!(h.closes, 0);
}

#[test]
fn commands_pipelined_after_a_chunk_are_parsed_normally() {
    let mut h = in_transaction(config());
    h.feed(b"BDAT 5\r\nhelloBDAT 6 LAST\r\n worldRSET\r\nNOOP\r\nQUIT\r\n");
    h.expect(
        r#"S: 250 2.0.0 Chunk accepted
           H: message from <a@example.org> to <b@example.net> body "hello world"
           D: accept
           S: 250 2.0.0 Message accepted
           S: 250 2.0.0 OK
           S: 250 2.0.0 OK
           S: 221 2.0.0 Bye
           -- close
           H: disconnect close=local reply=221 2.0.0 quit"#,
    );
    assert!(h.messages[0].chunked);
}

#[test]
fn bdat_last_gives_the_message_hook_the_same_shape_as_data() {
    let setup = "EHLO client.example\r\n\
                 MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x1\r\n\
                 RCPT TO:<b@example.net> NOTIFY=FAILURE\r\n\
                 RCPT TO:<c@example.net>\r\n";
    let body = "Subject: hi\r\n\r\nHello\r\n";

    let mut by_data = Harness::new(config());
    by_data.send(setup);
    by_data.send(&format!("DATA\r\n{body}.\r\n"));

    let mut by_bdat = Harness::new(config());
    by_bdat.send(setup);
    by_bdat.send(&format!("BDAT 13\r\n{}", &body[..13]));
    by_bdat.send(&format!("BDAT {} LAST\r\n{}", body.len() - 13, &body[13..]));

    let (data, bdat) = (&by_data.messages[0], &by_bdat.messages[0]);
    assert_eq!(data.envelope, bdat.envelope);
    assert_eq!(data.body, body.as_bytes());
    assert_eq!(bdat.body, body.as_bytes());
    assert!(!data.chunked);
    assert!(bdat.chunked);
    assert_eq!(bdat.envelope.recipients.len(), 2);
    assert_eq!(bdat.envelope.mail_params.body, Some(Body::EightBitMime));
    assert_eq!(
        &by_bdat.server_lines()[by_bdat.server_lines().len() - 2..],
        ["250 2.0.0 Chunk accepted", "250 2.0.0 Message accepted"]
    );
}

#[test]
fn bdat_0_last_completes_an_empty_message() {
    let mut h = in_transaction(config());
    h.send("BDAT 0 LAST\r\n");
    h.send("MAIL FROM:<c@example.org>\r\n");
    h.expect(
        r#"C: BDAT 0 LAST
           H: message from <a@example.org> to <b@example.net> body ""
           D: accept
           S: 250 2.0.0 Message accepted
           C: MAIL FROM:<c@example.org>
           S: 250 2.1.0 Sender OK"#,
    );
    assert!(h.messages[0].body.is_empty());
    assert!(h.messages[0].chunked);
}

#[test]
fn bdat_without_mail_or_rcpt_is_503_and_the_chunk_is_still_consumed() {
    let mut h = Harness::new(config());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("BDAT 6\r\n");
    h.send_data(b"QUIT\r\n");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("BDAT 6 LAST\r\n");
    h.send_data(b"QUIT\r\n");
    h.send("NOOP\r\n");
    h.expect(
        r#"C: BDAT 6
           C= QUIT\r\n
           S: 503 5.5.1 Need MAIL command first
           C: MAIL FROM:<a@example.org>
           S: 250 2.1.0 Sender OK
           C: BDAT 6 LAST
           C= QUIT\r\n
           S: 503 5.5.1 Need RCPT command first
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
    assert!(h.messages.is_empty());
}

#[test]
fn data_after_bdat_is_503_and_the_bdat_transaction_goes_on() {
    let mut h = in_transaction(config());
    h.send("BDAT 3\r\n");
    h.send_data(b"abc");
    h.send("DATA\r\n");
    h.send("BDAT 3 LAST\r\n");
    h.send_data(b"def");
    h.expect(
        r#"C: BDAT 3
           C= abc
           S: 250 2.0.0 Chunk accepted
           C: DATA
           S: 503 5.5.1 DATA cannot follow BDAT
           C: BDAT 3 LAST
           C= def
           H: message from <a@example.org> to <b@example.net> body "abcdef"
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
}

#[test]
fn bdat_after_last_is_503_and_consumed() {
    let mut h = in_transaction(config());
    h.send("BDAT 1 LAST\r\n");
    h.send_data(b"x");
    h.send("BDAT 6 LAST\r\n");
    h.send_data(b"QUIT\r\n");
    h.send("NOOP\r\n");
    h.expect(
        r#"C: BDAT 1 LAST
           C= x
           H: message from <a@example.org> to <b@example.net> body "x"
           D: accept
           S: 250 2.0.0 Message accepted
           C: BDAT 6 LAST
           C= QUIT\r\n
           S: 503 5.5.1 Need MAIL command first
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
    assert_eq!(h.messages.len(), 1);
}

fn small_limit() -> Config {
    Config {
        max_message_size: 10,
        ..config()
    }
}

#[test]
fn a_chunk_over_the_size_limit_is_consumed_then_552() {
    let mut h = in_transaction(small_limit());
    h.send("BDAT 11 LAST\r\n");
    h.send_data(b"QUIT\r\n12345");
    h.send("NOOP\r\n");
    h.expect(
        r#"C: BDAT 11 LAST
           C= QUIT\r\n12345
           S: 552 5.3.4 Message size exceeds fixed maximum message size
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
    assert!(h.messages.is_empty());
}

#[test]
fn chunks_adding_up_over_the_limit_end_the_transaction() {
    let mut h = in_transaction(small_limit());
    h.send("BDAT 6\r\n");
    h.send_data(b"123456");
    h.send("BDAT 5\r\n");
    h.send_data(b"78901");
    h.send("BDAT 0 LAST\r\n");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.expect(
        r#"C: BDAT 6
           C= 123456
           S: 250 2.0.0 Chunk accepted
           C: BDAT 5
           C= 78901
           S: 552 5.3.4 Message size exceeds fixed maximum message size
           C: BDAT 0 LAST
           S: 503 5.5.1 Need MAIL command first
           C: MAIL FROM:<a@example.org>
           S: 250 2.1.0 Sender OK"#,
    );
    assert!(h.messages.is_empty());
}

#[test]
fn chunks_exactly_at_the_limit_are_accepted() {
    let mut h = in_transaction(small_limit());
    h.send("BDAT 4\r\n");
    h.send_data(b"1234");
    h.send("BDAT 6 LAST\r\n");
    h.send_data(b"567890");
    assert_eq!(h.messages[0].body, b"1234567890");
}

#[test]
fn binarymime_refuses_data_and_takes_bdat() {
    let mut h = Harness::new(config());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n");
    h.send("RCPT TO:<b@example.net>\r\n");
    h.send("DATA\r\n");
    h.send("BDAT 7 LAST\r\n");
    h.send_data(b"\x00\xff\n.\n\r\x01");
    h.expect(
        r#"C: MAIL FROM:<a@example.org> BODY=BINARYMIME
           S: 250 2.1.0 Sender OK
           C: RCPT TO:<b@example.net>
           S: 250 2.1.5 Recipient OK
           C: DATA
           S: 503 5.5.1 BODY=BINARYMIME requires BDAT
           C: BDAT 7 LAST
           C= \x00\xff\n.\n\r\x01
           H: message from <a@example.org> to <b@example.net> body "\0�\n.\n\r\u{1}"
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
    // Binary bytes, bare LF and CR included, arrive exactly as sent.
    let message = &h.messages[0];
    assert_eq!(message.body, b"\x00\xff\n.\n\r\x01");
    assert_eq!(message.envelope.mail_params.body, Some(Body::BinaryMime));
}

#[test]
fn a_bdat_syntax_error_closes_since_the_chunk_cannot_be_skipped() {
    for bad in [
        "BDAT",
        "BDAT x",
        "BDAT -1",
        "BDAT 5 FIRST",
        "BDAT 5 LAST more",
        "BDAT 123456789012345678901",
    ] {
        let mut h = in_transaction(config());
        h.send(&format!("{bad}\r\nQUIT\r\n"));
        h.expect(&format!(
            "C: {bad}
             C: QUIT
             S: 501 5.5.4 Syntax error in arguments
             S: 421 4.5.0 mx.example Cannot resynchronise after a bad BDAT
             -- close
             H: disconnect close=local reply=421 4.5.0 bdat"
        ));
    }
}

fn data_hook() -> Config {
    Config {
        hooks: Hooks {
            data: true,
            message: true,
            ..Hooks::NONE
        },
        ..config()
    }
}

#[test]
fn a_data_hook_rejection_at_the_first_bdat_still_consumes_the_chunk() {
    let mut h = Harness::manual(data_hook());
    h.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h.send("BDAT 6\r\nQUIT\r\nNOOP\r\n");
    h.decide(Decision::reject(554, "5.7.1 not from you").unwrap());
    h.expect(
        "C: BDAT 6
         C: QUIT
         C: NOOP
         H: data
         D: reject 554 5.7.1 not from you
         S: 554 5.7.1 not from you
         S: 250 2.0.0 OK",
    );
    assert_eq!(h.closes, 0);
}

#[test]
fn the_data_hook_is_asked_once_per_bdat_transaction() {
    let mut h = Harness::manual(data_hook());
    h.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h.send("BDAT 2\r\nabBDAT 2\r\ncdBDAT 0 LAST\r\n");
    h.decide(Decision::Accept);
    h.decide(Decision::Accept);
    h.expect(
        r#"C: BDAT 2
           C: abBDAT 2
           C: cdBDAT 0 LAST
           H: data
           D: accept
           S: 250 2.0.0 Chunk accepted
           S: 250 2.0.0 Chunk accepted
           H: message from <a@example.org> to <b@example.net> body "abcd"
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
}

#[test]
fn a_data_hook_disconnect_at_bdat_closes_and_accepts_nothing() {
    let mut h = Harness::manual(data_hook());
    h.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h.send("BDAT 3 LAST\r\nabc");
    h.decide(
        Decision::disconnect(421, "4.7.0 try later", DisconnectMode::ForceDisconnect).unwrap(),
    );
    h.expect(
        "C: BDAT 3 LAST
         C~ abc
         H: data
         D: disconnect ForceDisconnect 421 4.7.0 try later
         S: 421 4.7.0 try later
         -- close
         H: disconnect close=local reply=421 4.7.0 bdat",
    );
    assert!(h.messages.is_empty());
}

#[test]
fn a_message_hook_rejection_at_bdat_last() {
    let mut h = Harness::manual(config());
    h.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h.send("BDAT 4 LAST\r\nspamNOOP\r\n");
    h.decide(Decision::reject(550, "5.7.1 spam").unwrap());
    h.expect(
        r#"C: BDAT 4 LAST
           C: spamNOOP
           H: message from <a@example.org> to <b@example.net> body "spam"
           D: reject 550 5.7.1 spam
           S: 550 5.7.1 spam
           S: 250 2.0.0 OK"#,
    );
}

#[test]
fn bdat_with_chunking_off_is_502_and_the_chunk_is_consumed() {
    let config = Config {
        extensions: Extensions {
            chunking: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = in_transaction(config);
    h.send("BDAT 6\r\n");
    h.send_data(b"QUIT\r\n");
    h.send("NOOP\r\n");
    h.expect(
        r#"C: BDAT 6
           C= QUIT\r\n
           S: 502 5.5.1 Command not implemented
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
}

#[test]
fn a_chunk_split_across_many_reads_gives_the_same_transcript() {
    let mut body = Vec::new();
    for i in 0..300u32 {
        body.extend_from_slice(format!("line {i}\r\n.\r\n").as_bytes());
    }
    body.extend_from_slice(b"\x00\r\r\n\n");
    // Binary content: its bytes are counted, never looked at for line endings.
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.net>\r\n"
            .to_vec();
    input.extend_from_slice(format!("BDAT {}\r\n", body.len() - 7).as_bytes());
    input.extend_from_slice(&body[..body.len() - 7]);
    input.extend_from_slice(b"BDAT 7 LAST\r\n");
    input.extend_from_slice(&body[body.len() - 7..]);
    input.extend_from_slice(b"QUIT\r\n");

    let whole = run_split(config(), &input, &[input.len()]);
    assert!(whole.contains("S: 250 2.0.0 Chunk accepted\n"), "{whole}");
    assert!(whole.contains("S: 250 2.0.0 Message accepted\n"), "{whole}");
    assert!(whole
        .ends_with("S: 221 2.0.0 Bye\n-- close\nH: disconnect close=local reply=221 2.0.0 quit\n"));
    for chunks in [&[1][..], &[2], &[3], &[7], &[64], &[1, 500, 3], &[4096]] {
        assert_eq!(
            run_split(config(), &input, chunks),
            whole,
            "chunks {chunks:?}"
        );
    }

    // And the body arrives intact when fed a byte at a time.
    let mut h = Harness::new(config());
    for byte in &input {
        h.feed(std::slice::from_ref(byte));
    }
    assert_eq!(h.messages[0].body, body);
}

#[test]
fn a_chunk_larger_than_the_pending_buffer_waits_for_the_data_hook() {
    let config = Config {
        max_message_size: 1 << 20,
        ..data_hook()
    };
    let mut h = Harness::manual(config);
    h.send(
        "EHLO client.example\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\n\
         RCPT TO:<b@example.net>\r\n",
    );
    h.transcript.clear();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut input = format!("BDAT {} LAST\r\n", body.len()).into_bytes();
    input.extend_from_slice(&body);
    input.extend_from_slice(b"NOOP\r\n");
    h.feed(&input);
    // Paused: past the command line the session holds at most its pending-input limit;
    // the rest waits with the runtime.
    let command_line = input.len() - body.len() - 6;
    let taken = input.len() - h.backlog.len();
    assert_eq!(taken, command_line + h.session.config().max_pending_input);
    h.decide(Decision::Accept);
    h.decide(Decision::Accept);
    assert!(h.backlog.is_empty());
    assert_eq!(h.messages[0].body, body);
    assert_eq!(
        h.server_lines(),
        ["250 2.0.0 Message accepted", "250 2.0.0 OK"]
    );
}
