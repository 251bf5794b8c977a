//! Policy delegation transcripts: the request's lines, the service's answer, and what the
//! caller is told.

use smtp_filter_proto::policy::{
    EnhancedCode, Error, PolicyAction, PolicyClient, PolicyError, PolicyOutput, PolicyRequest,
    ProtocolState, Refusal, RequestError,
};

fn rcpt_request() -> PolicyRequest {
    let mut r = PolicyRequest::new(ProtocolState::Rcpt);
    r.helo_name = "client.example".into();
    r.queue_id = "QID1".into();
    r.sender = "a@example.org".into();
    r.recipient = "b@example.com".into();
    r.client_address = "192.0.2.1".into();
    r.client_name = "client.example".into();
    r.reverse_client_name = "client.example".into();
    r.instance = "1a2b.3c4d.1".into();
    r.sasl_method = "plain".into();
    r.sasl_username = "alice".into();
    r.size = 1200;
    r.encryption_protocol = "TLSv1.3".into();
    r.encryption_cipher = "TLS_AES_256_GCM_SHA384".into();
    r.encryption_keysize = 256;
    r.client_port = "4321".into();
    r.server_address = "192.0.2.25".into();
    r.server_port = "25".into();
    r.extra.push(("mailsink_check".into(), "yes".into()));
    r
}

/// The outputs after the service sent `answer`, as text.
fn answer(client: &mut PolicyClient, answer: &[u8]) -> Vec<String> {
    client.handle_input(answer);
    let mut log = Vec::new();
    while let Some(o) = client.poll_output() {
        log.push(format!("{o:?}"));
    }
    log
}

#[test]
fn a_request_carries_every_attribute_postfix_sends() {
    let mut client = PolicyClient::new(4096);
    client.request(&rcpt_request()).unwrap();
    let Some(PolicyOutput::Write(bytes)) = client.poll_output() else {
        panic!("no write")
    };
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        text.split('\n').collect::<Vec<_>>(),
        [
            "request=smtpd_access_policy",
            "protocol_state=RCPT",
            "protocol_name=ESMTP",
            "helo_name=client.example",
            "queue_id=QID1",
            "sender=a@example.org",
            "recipient=b@example.com",
            "recipient_count=0",
            "client_address=192.0.2.1",
            "client_name=client.example",
            "reverse_client_name=client.example",
            "instance=1a2b.3c4d.1",
            "sasl_method=plain",
            "sasl_username=alice",
            "sasl_sender=",
            "size=1200",
            "ccert_subject=",
            "ccert_issuer=",
            "ccert_fingerprint=",
            "ccert_pubkey_fingerprint=",
            "encryption_protocol=TLSv1.3",
            "encryption_cipher=TLS_AES_256_GCM_SHA384",
            "encryption_keysize=256",
            "etrn_domain=",
            "stress=",
            "client_port=4321",
            "policy_context=",
            "server_address=192.0.2.25",
            "server_port=25",
            "mailsink_check=yes",
            "",
            "",
        ]
    );
    for state in [
        (ProtocolState::Connect, "CONNECT"),
        (ProtocolState::Ehlo, "EHLO"),
        (ProtocolState::Helo, "HELO"),
        (ProtocolState::Mail, "MAIL"),
        (ProtocolState::Data, "DATA"),
        (ProtocolState::EndOfMessage, "END-OF-MESSAGE"),
    ] {
        assert_eq!(state.0.as_str(), state.1);
    }
}

#[test]
fn a_value_with_a_line_break_is_not_sent() {
    let mut client = PolicyClient::new(4096);
    let mut r = rcpt_request();
    r.helo_name = "evil\nrecipient=victim@example.com".into();
    assert_eq!(
        client.request(&r),
        Err(Error::Request(RequestError::LineBreak("helo_name".into())))
    );
    r.helo_name = "ok".into();
    r.extra.push(("a=b".into(), "c".into()));
    assert_eq!(
        client.request(&r),
        Err(Error::Request(RequestError::BadName("a=b".into())))
    );
    assert!(client.poll_output().is_none());
    assert!(!client.awaiting_response());
}

#[test]
fn every_access_action_before_the_queue() {
    let refusal = |code: Option<(u8, u16, u16)>, text: Option<&str>| Refusal {
        enhanced: code.map(|(class, subject, detail)| EnhancedCode {
            class,
            subject,
            detail,
        }),
        text: text.map(str::to_string),
    };
    let cases: Vec<(&str, PolicyAction)> = vec![
        ("OK", PolicyAction::Ok),
        ("ok", PolicyAction::Ok),
        ("1.2.3.4", PolicyAction::Ok),
        ("DUNNO", PolicyAction::Dunno),
        ("REJECT", PolicyAction::Reject(refusal(None, None))),
        (
            "REJECT 5.7.1 go away",
            PolicyAction::Reject(refusal(Some((5, 7, 1)), Some("go away"))),
        ),
        (
            "DEFER try later",
            PolicyAction::Defer(refusal(None, Some("try later"))),
        ),
        (
            "DEFER_IF_REJECT 4.7.1 maybe",
            PolicyAction::DeferIfReject(refusal(Some((4, 7, 1)), Some("maybe"))),
        ),
        (
            "DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
            PolicyAction::DeferIfPermit(refusal(
                None,
                Some("Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"),
            )),
        ),
        (
            "450 4.2.0 greylisted",
            PolicyAction::Reply {
                code: 450,
                enhanced: Some(EnhancedCode {
                    class: 4,
                    subject: 2,
                    detail: 0,
                }),
                text: "greylisted".into(),
            },
        ),
        (
            "554 no",
            PolicyAction::Reply {
                code: 554,
                enhanced: None,
                text: "no".into(),
            },
        ),
        (
            "PREPEND X-Greylist: delayed 62 seconds by postgrey",
            PolicyAction::Prepend {
                name: "X-Greylist".into(),
                value: " delayed 62 seconds by postgrey".into(),
            },
        ),
        ("DISCARD spam", PolicyAction::Discard(Some("spam".into()))),
        (
            "WARN odd client",
            PolicyAction::Warn(Some("odd client".into())),
        ),
        ("HOLD", PolicyAction::Hold(None)),
        ("INFO noted", PolicyAction::Info(Some("noted".into()))),
        (
            "FILTER smtp:[127.0.0.1]:10025",
            PolicyAction::Unsupported {
                action: "FILTER".into(),
                text: "smtp:[127.0.0.1]:10025".into(),
            },
        ),
        (
            "REDIRECT x@example.com",
            PolicyAction::Unsupported {
                action: "REDIRECT".into(),
                text: "x@example.com".into(),
            },
        ),
        (
            "BCC x@example.com",
            PolicyAction::Unsupported {
                action: "BCC".into(),
                text: "x@example.com".into(),
            },
        ),
        (
            "permit_mynetworks",
            PolicyAction::Unsupported {
                action: "permit_mynetworks".into(),
                text: String::new(),
            },
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(PolicyAction::parse(value), Ok(expected), "{value}");
    }
    for (value, error) in [
        ("", "empty action"),
        ("250 fine", "a reply code that is not 4xx or 5xx"),
        (
            "550 4.7.1 class mismatch",
            "enhanced status code of another class",
        ),
        ("PREPEND no colon", "PREPEND without a header field"),
        ("PREPEND Bad Name: x", "PREPEND with a bad field name"),
    ] {
        assert_eq!(
            PolicyAction::parse(value),
            Err(PolicyError::BadAction(error)),
            "{value}"
        );
    }
}

#[test]
fn one_connection_carries_request_after_request() {
    let mut client = PolicyClient::new(4096);
    client.request(&rcpt_request()).unwrap();
    let _ = client.poll_output();
    assert_eq!(
        answer(&mut client, b"action=DEFER_IF_PERMIT Greylisted\r\n"),
        Vec::<String>::new()
    );
    assert!(client.awaiting_response());
    assert_eq!(
        client.request(&rcpt_request()),
        Err(Error::AwaitingResponse)
    );
    assert_eq!(
        answer(&mut client, b"\r\n"),
        ["Response(PolicyResponse { action: DeferIfPermit(Refusal { enhanced: None, text: Some(\"Greylisted\") }), attributes: [] })"]
    );
    client.request(&rcpt_request()).unwrap();
    let _ = client.poll_output();
    assert_eq!(
        answer(&mut client, b"score=0.1\naction=dunno\n\n"),
        ["Response(PolicyResponse { action: Dunno, attributes: [(\"score\", \"0.1\")] })"]
    );
}

#[test]
fn a_broken_service_fails_with_a_typed_error() {
    let cases: [(&[u8], &str); 7] = [
        (b"\n", "NoAction"),
        (b"action=OK\naction=REJECT\n\n", "DuplicateAction"),
        (b"this is not an attribute\n\n", "NotAnAttribute"),
        (b"action=REJECT \x1b[2J\n\n", "ControlCharacter"),
        (b"action=REJECT \xff\n\n", "NotUtf8"),
        (b"action=OK\n\nmore", "Unsolicited"),
        (&[b'a'; 5000], "TooLarge { max: 4096 }"),
    ];
    for (bytes, error) in cases {
        let mut client = PolicyClient::new(4096);
        client.request(&rcpt_request()).unwrap();
        let _ = client.poll_output();
        let log = answer(&mut client, bytes);
        assert_eq!(
            log.last().unwrap(),
            &format!("Failed({error})"),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        assert!(client.input_capacity() <= 4096);
        assert_eq!(client.request(&rcpt_request()), Err(Error::Failed));
    }
    let mut client = PolicyClient::new(4096);
    assert_eq!(
        answer(&mut client, b"action=OK\n\n"),
        ["Failed(Unsolicited)"]
    );
}
