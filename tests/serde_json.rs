//! With the `serde` feature, the disconnect context serialises with the key names of
//! Halon's disconnect script, and the envelope serialises too.

#![cfg(feature = "serde")]

mod common;
use common::*;
use serde_json::{json, Value};
use smtp_session::{Config, Decision, Extensions, Hooks};

/// A session with TLS, AUTH, a transaction and QUIT, its disconnect context as JSON.
fn full_session() -> (Harness, Value) {
    let config = Config {
        extensions: Extensions {
            starttls: true,
            auth: true,
            ..Extensions::default()
        },
        hooks: Hooks {
            auth: true,
            message: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut info = info();
    info.remote_ptr = Some("client.example".into());
    info.remote_uid = Some(106);
    let policy = Policy::Auto(Box::new(|_| Decision::Accept));
    let mut h = Harness::with_auto_tls(config, info, policy, tls_info());
    h.send("EHLO client.example\r\nSTARTTLS\r\n");
    h.send("EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    h.send(
        "MAIL FROM:<a@example.org> SIZE=20 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1\r\n\
         RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.net\r\n\
         RCPT TO:<c@example.net>\r\n\
         DATA\r\nhi\r\n.\r\nQUIT\r\n",
    );
    let context = serde_json::to_value(h.context()).unwrap();
    (h, context)
}

#[test]
fn the_disconnect_context_uses_halons_key_names() {
    let (_, context) = full_session();
    assert_eq!(
        context["arguments"],
        json!({
            "close": "local",
            "reply": {"code": 221, "enhanced": [2, 0, 0], "reason": ["Bye"], "state": "QUIT"},
            "error": null
        })
    );
    let connection = &context["connection"];
    assert_eq!(connection["id"], "conn-1");
    assert_eq!(connection["remoteip"], "192.0.2.10");
    assert_eq!(connection["remoteport"], 41666);
    assert_eq!(connection["remoteptr"], "client.example");
    assert_eq!(connection["remoteuid"], 106);
    assert_eq!(connection["localip"], "198.51.100.1");
    assert_eq!(connection["localport"], 25);
    assert_eq!(connection["serverid"], "inbound");
    assert_eq!(
        connection["helo"],
        json!({"verb": "EHLO", "host": "client.example"})
    );
    assert_eq!(
        connection["tls"],
        json!({
            "protocol": "TLSv1.3",
            "cipher": "TLS_AES_256_GCM_SHA384",
            "keysize": 256,
            "sni": "mx.example",
            "peercert": {"x509": [0x30, 0x82, 0x01, 0x0a], "error": 18}
        })
    );
    assert_eq!(
        connection["auth"],
        json!({"mechanism": "PLAIN", "username": "alice"})
    );
    assert_eq!(context["transaction"], json!({}));
    // The user context is the runtime's own value and is not serialised.
    assert!(context.get("context").is_none());
}

#[test]
fn absent_parts_serialise_as_null_and_errors_with_their_type() {
    let mut h = Harness::new(Config {
        extensions: Extensions {
            starttls: true,
            ..Extensions::default()
        },
        ..config()
    });
    h.send("STARTTLS\r\n");
    h.tls_failed(tls_error());
    let context = serde_json::to_value(h.context()).unwrap();
    assert_eq!(context["arguments"]["close"], "remote");
    assert_eq!(
        context["arguments"]["error"],
        json!({"reason": "handshake failure", "type": "tls", "code": 0x14094410})
    );
    assert_eq!(context["arguments"]["reply"]["state"], "STARTTLS");
    let connection = &context["connection"];
    for absent in ["helo", "tls", "auth", "remoteptr", "remoteuid"] {
        assert_eq!(connection[absent], Value::Null, "{absent}");
    }
}

#[test]
fn the_envelope_serialises_with_its_paths_as_text() {
    let (h, _) = full_session();
    let envelope = serde_json::to_value(&h.messages[0].envelope).unwrap();
    assert_eq!(envelope["mail_from"], "a@example.org");
    let params = &envelope["mail_params"];
    assert_eq!(params["size"], 20);
    assert_eq!(params["envid"], "QQ+1");
    assert_eq!(params["smtputf8"], false);
    assert!(!params["body"].is_null());
    assert!(!params["ret"].is_null());
    let recipients = envelope["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 2);
    assert_eq!(recipients[0]["path"], "b@example.net");
    assert_eq!(
        recipients[0]["params"]["notify"],
        json!({"never": false, "success": true, "failure": true, "delay": false})
    );
    assert_eq!(
        recipients[0]["params"]["orcpt"],
        json!({"addr_type": "rfc822", "address": "b@example.net"})
    );
    assert_eq!(recipients[1]["path"], "c@example.net");
    assert_eq!(recipients[1]["params"]["notify"], Value::Null);
}

#[test]
fn the_null_reverse_path_serialises_as_an_empty_string() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\n");
    let envelope = serde_json::to_value(&h.messages[0].envelope).unwrap();
    assert_eq!(envelope["mail_from"], "");
    assert_eq!(envelope["recipients"][0]["path"], "postmaster");
}
