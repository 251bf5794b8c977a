//! Graceful shutdown with sessions in every state: idle sessions get `421 4.3.2` at once, a
//! message being sent is finished and accepted first, a pending hook is answered first; a
//! session that never reaches a command boundary is closed at the end of the grace period,
//! and `serve` returns.

mod common;

use std::time::{Duration, Instant};

use common::{config, serve, Client, Log, HOSTNAME};
use smtp_session_tokio::{
    Connection, Decision, DisconnectContext, Handler, HookResult, Limits, MailParams, Message,
    ReversePath, Server,
};

#[derive(Clone, Default)]
struct Recorder {
    log: Log,
}

impl Handler for Recorder {
    async fn mail_from(
        &mut self,
        _: &mut Connection<'_>,
        from: ReversePath,
        _: MailParams,
    ) -> HookResult {
        if from.to_string().starts_with("slow@") {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        Ok(Decision::Accept)
    }

    async fn message(&mut self, _: &mut Connection<'_>, _: Message) -> HookResult {
        Ok(Decision::Accept)
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        self.log.push(&context);
    }
}

fn shutting_down() -> String {
    format!("421 4.3.2 {HOSTNAME} Service shutting down\r\n")
}

#[test]
fn sessions_mid_transaction_finish_their_command_then_get_421() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let running = serve(move |l| Server::new(handler).config(config()).listener(l));

    let mut idle = Client::greeted(running.addr);
    idle.cmd("EHLO idle.example");
    let mut in_data = Client::greeted(running.addr);
    in_data.cmd("EHLO data.example");
    in_data.cmd("MAIL FROM:<a@example.org>");
    in_data.cmd("RCPT TO:<b@example.net>");
    assert!(in_data.cmd("DATA").starts_with("354"));
    in_data.send("Subject: during shutdown\r\n\r\n");
    let mut in_hook = Client::greeted(running.addr);
    in_hook.cmd("EHLO hook.example");
    in_hook.send("MAIL FROM:<slow@example.org>\r\n");
    std::thread::sleep(Duration::from_millis(100));

    running.shutdown.cancel();
    assert_eq!(idle.read_to_close_text(), shutting_down());
    assert_eq!(
        in_hook.read_to_close_text(),
        format!("250 2.1.0 Sender OK\r\n{}", shutting_down())
    );
    // New connections are no longer taken.
    assert!(
        std::net::TcpStream::connect_timeout(&running.addr, Duration::from_secs(2))
            .map(|s| Client::from_stream(s).read_to_close_text().is_empty())
            .unwrap_or(true)
    );
    in_data.send("last line\r\n.\r\n");
    assert_eq!(
        in_data.read_to_close_text(),
        format!("250 2.0.0 Message accepted\r\n{}", shutting_down())
    );
    assert!(running.wait_done(Duration::from_secs(5)), "serve returned");
    let contexts = log.wait(3);
    assert!(contexts
        .iter()
        .all(|c| c["arguments"]["reply"]["state"] == "SHUTDOWN"));
    assert!(contexts.iter().all(|c| c["arguments"]["close"] == "local"));
}

#[test]
fn a_session_that_never_reaches_a_boundary_is_closed_after_the_grace_period() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let limits = Limits {
        shutdown_grace: Duration::from_millis(500),
        ..Limits::default()
    };
    let running = serve(move |l| {
        Server::new(handler)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut stuck = Client::greeted(running.addr);
    stuck.cmd("EHLO stuck.example");
    stuck.cmd("MAIL FROM:<a@example.org>");
    stuck.cmd("RCPT TO:<b@example.net>");
    assert!(stuck.cmd("DATA").starts_with("354"));
    stuck.send("Subject: never ends\r\n");

    let started = Instant::now();
    running.shutdown.cancel();
    assert_eq!(
        stuck.read_to_close_text(),
        "",
        "no reply is owed in the middle of a message"
    );
    assert!(running.wait_done(Duration::from_secs(5)), "serve returned");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    let context = &log.wait(1)[0];
    assert_eq!(
        context["arguments"]["error"]["reason"],
        "closed at the end of the shutdown grace period"
    );
}
