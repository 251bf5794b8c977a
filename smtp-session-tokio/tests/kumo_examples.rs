//! KumoMTA's three `kumo.disconnect` examples, each one line in a handler's MAIL FROM hook,
//! over a socket: the client reads exactly the documented bytes, then the connection closes,
//! and the disconnect context says so.

mod common;

use common::{config, serve, Client, Log};
use smtp_session_tokio::DisconnectMode::{FollowWith421, ForceDisconnect};
use smtp_session_tokio::{
    Connection, Decision, DisconnectContext, Handler, HookResult, MailParams, Message, ReversePath,
    Server,
};

#[derive(Clone)]
struct Kumo {
    log: Log,
}

impl Handler for Kumo {
    async fn mail_from(
        &mut self,
        _: &mut Connection<'_>,
        from: ReversePath,
        _: MailParams,
    ) -> HookResult {
        Ok(match from.to_string().as_str() {
            "a@example.org" => {
                Decision::disconnect(421, "mta.example.com go away!", ForceDisconnect)?
            }
            "b@example.org" => Decision::disconnect(451, "no thank you", ForceDisconnect)?,
            "c@example.org" => Decision::disconnect(451, "no thank you", FollowWith421)?,
            "d@example.org" => Decision::disconnect(700, "not a code", FollowWith421)?,
            _ => Decision::Accept,
        })
    }

    async fn message(&mut self, _: &mut Connection<'_>, _: Message) -> HookResult {
        panic!("no message is accepted in these stories");
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        self.log.push(&context);
    }
}

const EXAMPLES: [(&str, &str); 3] = [
    ("a@example.org", "421 mta.example.com go away!\r\n"),
    ("b@example.org", "451 no thank you\r\n"),
    (
        "c@example.org",
        "451 no thank you\r\n421 mx.test disconnecting due to previous error\r\n",
    ),
];

fn start() -> (common::Running, Log) {
    let log = Log::default();
    let handler = Kumo { log: log.clone() };
    let running = serve(move |l| Server::new(handler).config(config()).listener(l));
    (running, log)
}

#[test]
fn each_example_sends_exactly_the_documented_bytes_then_closes() {
    let (running, log) = start();
    for (n, (sender, expected)) in EXAMPLES.iter().enumerate() {
        let mut c = Client::greeted(running.addr);
        assert!(c.cmd("EHLO client.example").starts_with("250-mx.test"));
        c.send(format!("MAIL FROM:<{sender}>\r\n"));
        assert_eq!(c.read_to_close_text(), *expected, "{sender}");

        let context = &log.wait(n + 1)[n];
        let reply = &context["arguments"]["reply"];
        assert_eq!(context["arguments"]["close"], "local");
        assert_eq!(reply["state"], "MAIL");
        let last = if expected.contains("421 mx.test") {
            421
        } else {
            expected[..3].parse().unwrap()
        };
        assert_eq!(reply["code"], last, "{sender}");
        assert_eq!(context["connection"]["helo"]["host"], "client.example");
        assert_eq!(context["connection"]["remoteip"], "127.0.0.1");
        assert_eq!(context["connection"]["serverid"], "smtp");
    }
}

#[test]
fn commands_pipelined_after_the_disconnect_get_no_reply() {
    let (running, _log) = start();
    for (sender, expected) in EXAMPLES {
        let mut c = Client::greeted(running.addr);
        c.send(format!(
            "EHLO client.example\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n"
        ));
        assert!(c.reply().starts_with("250-"));
        assert_eq!(c.read_to_close_text(), expected, "{sender}");
    }
}

#[test]
fn a_reply_that_does_not_validate_fails_the_hook_and_the_session_goes_on() {
    let (running, log) = start();
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<d@example.org>"),
        "451 4.3.0 Temporary failure, please try again later\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<ok@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(c.read_to_close_text(), "");
    let context = &log.wait(1)[0];
    assert_eq!(context["arguments"]["reply"]["state"], "QUIT");
}
