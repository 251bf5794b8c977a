//! The handler's side: only the hooks it names are called, its `Connection` can change the
//! EHLO extensions and keep a value for the disconnect context, a decision that does not fit
//! its stage is a failed hook, and `serve_connection` serves any byte stream.

mod common;

use std::sync::{Arc, Mutex};

use common::{config, serve, Client, Log, HOSTNAME};
use smtp_session_tokio::{
    Connection, ConnectionInfo, Decision, DisconnectContext, Handler, HeloVerb, HookError,
    HookResult, Hooks, Listener, MailParams, Message, Reply, ReversePath, Server, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Picky {
    hooks: Option<Hooks>,
    called: Arc<Mutex<Vec<&'static str>>>,
    failures: Arc<Mutex<Vec<String>>>,
    log: Log,
}

impl Handler for Picky {
    fn hooks(&self) -> Hooks {
        self.hooks.unwrap_or(Hooks::ALL)
    }

    async fn helo(&mut self, conn: &mut Connection<'_>, _: HeloVerb, host: String) -> HookResult {
        self.called.lock().unwrap().push("helo");
        let mut extensions = conn.extensions();
        extensions.chunking = host != "no-chunking.example";
        conn.set_extensions(extensions);
        conn.set_user_context(Box::new(host));
        Ok(Decision::Accept)
    }

    async fn mail_from(
        &mut self,
        _: &mut Connection<'_>,
        from: ReversePath,
        _: MailParams,
    ) -> HookResult {
        self.called.lock().unwrap().push("mail_from");
        if from.to_string() == "ok-with-2xx-refusal@example.org" {
            // A refusal must be 4xx or 5xx: the session refuses this decision.
            return Ok(Decision::Reject(Reply::new(250, "not a refusal")?));
        }
        Ok(Decision::Accept)
    }

    async fn vrfy(&mut self, _: &mut Connection<'_>, string: String) -> HookResult {
        Ok(match string.as_str() {
            "postmaster" => Decision::AcceptWith(Reply::new(250, "2.1.5 <postmaster@mx.test>")?),
            _ => Decision::reject(550, "5.1.1 No such user here")?,
        })
    }

    fn hook_failed(&mut self, error: &HookError) {
        self.failures.lock().unwrap().push(error.to_string());
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        let host = context
            .context
            .as_ref()
            .and_then(|c| c.downcast_ref::<String>())
            .cloned();
        self.called.lock().unwrap().push(if host.is_some() {
            "disconnect+context"
        } else {
            "disconnect"
        });
        self.log.push(&context);
    }
}

#[test]
fn only_the_hooks_named_are_called() {
    let handler = Picky {
        hooks: Some(Hooks {
            mail_from: true,
            ..Hooks::NONE
        }),
        ..Picky::default()
    };
    let called = handler.called.clone();
    let running = serve(move |l| Server::new(handler).config(config()).listener(l));
    let mut c = Client::greeted(running.addr);
    assert!(
        c.cmd("EHLO no-chunking.example").contains("CHUNKING"),
        "the helo hook did not run"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(c.read_to_close_text(), "");
    drop(running);
    assert_eq!(*called.lock().unwrap(), ["mail_from", "disconnect"]);
}

#[test]
fn the_connection_changes_the_ehlo_reply_and_keeps_a_value_for_the_context() {
    let handler = Picky::default();
    let called = handler.called.clone();
    let log = handler.log.clone();
    let running = serve(move |l| Server::new(handler).config(config()).listener(l));
    let mut c = Client::greeted(running.addr);
    assert!(!c.cmd("EHLO no-chunking.example").contains("CHUNKING"));
    assert!(c.cmd("EHLO other.example").contains("CHUNKING"));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    log.wait(1);
    assert_eq!(
        *called.lock().unwrap(),
        ["helo", "helo", "disconnect+context"]
    );
}

#[test]
fn a_decision_that_does_not_fit_its_stage_is_a_failed_hook() {
    let handler = Picky::default();
    let failures = handler.failures.clone();
    let running = serve(move |l| Server::new(handler).config(config()).listener(l));
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<ok-with-2xx-refusal@example.org>"),
        "451 4.3.0 Temporary failure, please try again later\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].contains("decision does not fit"),
        "{failures:?}"
    );
}

#[test]
fn vrfy_is_answered_by_the_handler() {
    let running = serve(move |l| Server::new(Picky::default()).config(config()).listener(l));
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("VRFY postmaster"),
        "250 2.1.5 <postmaster@mx.test>\r\n"
    );
    assert_eq!(c.cmd("VRFY nobody"), "550 5.1.1 No such user here\r\n");
}

#[test]
fn serve_connection_serves_any_byte_stream() {
    let handler = Picky::default();
    let log = handler.log.clone();
    let server = Server::new(handler).config(config());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transcript = runtime.block_on(async {
        let (mut client, io) = tokio::io::duplex(1024);
        let info = ConnectionInfo {
            id: "pipe-1".into(),
            ..ConnectionInfo::default()
        };
        let serving = server.serve_connection(io, info, Transport::Plain);
        let talking = async {
            client
                .write_all(b"EHLO pipe.example\r\nQUIT\r\n")
                .await
                .unwrap();
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        };
        let (_, all) = tokio::join!(serving, talking);
        String::from_utf8(all).unwrap()
    });
    assert!(transcript.starts_with(&format!("220 {HOSTNAME} ESMTP\r\n250-{HOSTNAME}")));
    assert!(transcript.ends_with("221 2.0.0 Bye\r\n"), "{transcript}");
    let context = &log.wait(1)[0];
    assert_eq!(context["connection"]["id"], "pipe-1");
    assert_eq!(context["connection"]["helo"]["host"], "pipe.example");
}

/// Records the `Received:` field of each message and refuses recipients at `no@`.
#[derive(Clone, Default)]
struct Tracing {
    received: Arc<Mutex<Vec<String>>>,
}

impl Handler for Tracing {
    async fn message(&mut self, conn: &mut Connection<'_>, message: Message) -> HookResult {
        let received = conn.received(&message.envelope, "ID1", "Sat, 28 Nov 2026 10:00:00 +0000");
        self.received.lock().unwrap().push(received.to_string());
        if !conn.config().lmtp {
            return Ok(Decision::Accept);
        }
        let mut replies = Vec::new();
        for rcpt in &message.envelope.recipients {
            replies.push(if rcpt.path.to_string().starts_with("no@") {
                Reply::new(550, "5.1.1 no such mailbox")?
            } else {
                Reply::new(250, "2.0.0 delivered")?
            });
        }
        Ok(Decision::PerRecipient(replies))
    }
}

#[test]
fn an_lmtp_listener_serves_lmtp_beside_smtp_and_the_connection_builds_the_trace_field() {
    let handler = Tracing::default();
    let received = handler.received.clone();
    let lmtp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    lmtp.set_nonblocking(true).unwrap();
    let lmtp_addr = lmtp.local_addr().unwrap();
    let running = serve(move |l| {
        let lmtp = tokio::net::TcpListener::from_std(lmtp).unwrap();
        Server::new(handler)
            .config(config())
            .listener(l)
            .listener(Listener::plain(lmtp).lmtp())
    });

    let mut c = Client::greeted(lmtp_addr);
    assert_eq!(
        c.cmd("EHLO client.example"),
        "500 5.5.1 Command unrecognized\r\n"
    );
    assert!(c.cmd("LHLO client.example").starts_with("250-mx.test"));
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<yes@example.net>");
    c.cmd("RCPT TO:<no@example.net>");
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send("Subject: x\r\n\r\nhello\r\n.\r\n");
    assert_eq!(c.reply(), "250 2.0.0 delivered\r\n");
    assert_eq!(c.reply(), "550 5.1.1 no such mailbox\r\n");
    c.cmd("QUIT");

    // The plain listener of the same server still speaks SMTP.
    let mut c = Client::greeted(running.addr);
    assert!(c.cmd("LHLO client.example").starts_with("500"));
    assert!(c.cmd("EHLO client.example").starts_with("250-mx.test"));
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<yes@example.net>");
    c.cmd("DATA");
    c.send("Subject: x\r\n\r\nhello\r\n.\r\n");
    assert_eq!(c.reply(), "250 2.0.0 Message accepted\r\n");
    c.cmd("QUIT");

    let received = received.lock().unwrap();
    assert_eq!(
        *received,
        [
            "Received: from client.example ([127.0.0.1]) by mx.test with LMTP id ID1;\r\n\
             \tSat, 28 Nov 2026 10:00:00 +0000\r\n",
            "Received: from client.example ([127.0.0.1]) by mx.test with ESMTP id ID1\r\n\
             \tfor <yes@example.net>; Sat, 28 Nov 2026 10:00:00 +0000\r\n",
        ]
    );
}
