//! The `tracing` feature: a whole session's dialogue as debug events, in a span per
//! connection and per transaction, with the client's credentials redacted and message data
//! summarised by its size.

use std::sync::{Arc, Mutex};

use smtp_session_tokio::{
    AuthRequest, Config, Connection, ConnectionInfo, Decision, Handler, HookResult, Server,
    Transport, DIALOGUE,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Every dialogue event as its message and as `spans: fields`, and every span as
/// `name{fields}`.
#[derive(Clone, Default)]
struct Recorded {
    messages: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<String>>>,
    spans: Arc<Mutex<Vec<String>>>,
}

/// Fields as `name=value` words, the message apart.
#[derive(Default)]
struct Fields(String, String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = format!("{value:?}");
            return;
        }
        let sep = if self.0.is_empty() { "" } else { " " };
        self.0 = format!("{}{sep}{}={value:?}", self.0, field.name());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorded {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let name = attrs.metadata().name();
        self.spans
            .lock()
            .unwrap()
            .push(format!("{name}{{{}}}", fields.0));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != DIALOGUE {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope: Vec<_> = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|span| span.name()).collect())
            .unwrap_or_default();
        let line = format!("{}: {} {}", scope.join("/"), fields.0, fields.1);
        self.events.lock().unwrap().push(line);
        self.messages.lock().unwrap().push(fields.1);
    }
}

#[derive(Clone)]
struct Accepting;

impl Handler for Accepting {
    async fn auth(&mut self, _: &mut Connection<'_>, _: AuthRequest) -> HookResult {
        Ok(Decision::Accept)
    }
}

#[tokio::test]
async fn a_sessions_dialogue_is_traced_with_credentials_redacted_and_data_summarised() {
    let recorded = Recorded::default();
    let subscriber = tracing_subscriber::registry().with(recorded.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let mut config = Config {
        hostname: "mx.test".into(),
        auth_without_tls: true,
        ..Config::default()
    };
    config.extensions.auth = true;
    let server = Server::new(Accepting).config(config);
    let (io, client) = tokio::io::duplex(64 * 1024);
    let info = ConnectionInfo {
        id: "c1".into(),
        remote_ip: Some("192.0.2.1".parse().unwrap()),
        server_id: Some("smtp".into()),
        ..ConnectionInfo::default()
    };
    let serving =
        tokio::spawn(async move { server.serve_connection(io, info, Transport::Plain).await });
    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();
    let mut reply = async || {
        let mut got = Vec::new();
        loop {
            let line = lines.next_line().await.unwrap().expect("a reply line");
            let last = line.as_bytes().get(3) != Some(&b'-');
            got.push(line);
            if last {
                return got;
            }
        }
    };
    // What the client read and wrote, as the trace must show it.
    let mut expected = Vec::new();
    let server = |expected: &mut Vec<String>, lines: Vec<String>| {
        expected.extend(lines.into_iter().map(|l| format!("> {l}")));
    };
    server(&mut expected, reply().await);
    write.write_all(b"EHLO client.example\r\n").await.unwrap();
    expected.push("< EHLO client.example".into());
    server(&mut expected, reply().await);
    // The password is in the initial response of PLAIN: "\0user\0secret".
    write
        .write_all(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n")
        .await
        .unwrap();
    expected.push("< AUTH PLAIN [1 words redacted]".into());
    server(&mut expected, reply().await);
    let envelope = "MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n";
    write.write_all(envelope.as_bytes()).await.unwrap();
    for command in ["MAIL FROM:<a@x.example>", "RCPT TO:<b@y.example>", "DATA"] {
        expected.push(format!("< {command}"));
    }
    let mail = reply().await;
    server(&mut expected, mail.clone());
    server(&mut expected, reply().await);
    server(&mut expected, reply().await);
    let body = "Subject: hi\r\n\r\nsecret body\r\n";
    write
        .write_all(format!("{body}.\r\n").as_bytes())
        .await
        .unwrap();
    expected.push(format!("< [message data, {} bytes]", body.len()));
    expected.push("< .".into());
    let stored = reply().await;
    server(&mut expected, stored.clone());
    // BDAT, its chunk and QUIT pipelined after the envelope.
    let chunk = "hello\r\nbye\r\n";
    let batch = format!(
        "MAIL FROM:<c@x.example>\r\nRCPT TO:<d@y.example>\r\nBDAT {} LAST\r\n{chunk}QUIT\r\n",
        chunk.len()
    );
    write.write_all(batch.as_bytes()).await.unwrap();
    for command in [
        "MAIL FROM:<c@x.example>",
        "RCPT TO:<d@y.example>",
        "BDAT 12 LAST",
    ] {
        expected.push(format!("< {command}"));
    }
    expected.push("< [message data, 12 bytes]".into());
    expected.push("< QUIT".into());
    for _ in 0..4 {
        server(&mut expected, reply().await);
    }
    write.shutdown().await.unwrap();
    serving.await.unwrap();

    let messages = recorded.messages.lock().unwrap().clone();
    let events = recorded.events.lock().unwrap().clone();
    assert_eq!(messages, expected, "{events:#?}");

    // Every event names its connection and client; the transaction's carry its span.
    assert!(events
        .iter()
        .all(|e| e.contains("id=c1 client=Some(192.0.2.1)")));
    let in_transaction: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("smtp_connection/smtp_transaction:"))
        .collect();
    assert!(
        in_transaction.iter().any(|e| e.contains(&mail[0])),
        "{events:#?}"
    );
    assert!(
        in_transaction.iter().any(|e| e.contains(&stored[0])),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .filter(|e| e.contains("QUIT"))
        .all(|e| !e.contains("transaction")));
    let spans = recorded.spans.lock().unwrap().clone();
    assert_eq!(
        spans,
        [
            "smtp_connection{id=c1 client=Some(192.0.2.1) listener=\"smtp\"}",
            "smtp_transaction{mail_from=a@x.example}",
            "smtp_transaction{mail_from=c@x.example}",
        ]
    );
    assert!(!events.iter().any(|e| e.contains("secret")), "{events:#?}");
}
