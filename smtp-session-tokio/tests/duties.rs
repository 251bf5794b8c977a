//! The runtime's duties seen from a client: pipelining into a slow hook, backpressure while
//! a hook is pending, a flood of pipelined commands, a client that never reads, a hook that
//! never answers, the session's own deadline.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{config, serve, Client, Log, HOSTNAME};
use smtp_session_tokio::{
    Connection, Decision, DisconnectContext, Handler, HookResult, Hooks, Limits, MailParams,
    Message, ReversePath, Server,
};

/// MAIL FROM takes `delay` (forever for `<stuck@...>`); messages are recorded.
#[derive(Clone)]
struct Slow {
    delay: Duration,
    log: Log,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Slow {
    fn new(delay: Duration) -> Self {
        Slow {
            delay,
            log: Log::default(),
            messages: Default::default(),
        }
    }
}

impl Handler for Slow {
    fn hooks(&self) -> Hooks {
        Hooks {
            mail_from: true,
            message: true,
            ..Hooks::NONE
        }
    }

    async fn mail_from(
        &mut self,
        _: &mut Connection<'_>,
        from: ReversePath,
        _: MailParams,
    ) -> HookResult {
        if from.to_string().starts_with("stuck@") {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        Ok(Decision::Accept)
    }

    async fn message(&mut self, _: &mut Connection<'_>, message: Message) -> HookResult {
        self.messages.lock().unwrap().push(message.body);
        Ok(Decision::Accept)
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        self.log.push(&context);
    }
}

fn start(
    handler: Slow,
    limits: Limits,
    tweak: impl FnOnce(&mut smtp_session_tokio::Config),
) -> common::Running {
    let mut config = config();
    tweak(&mut config);
    serve(move |l| {
        Server::new(handler)
            .config(config)
            .limits(limits)
            .listener(l)
    })
}

#[test]
fn a_whole_transaction_pipelined_into_a_slow_hook_is_answered_in_order() {
    let handler = Slow::new(Duration::from_millis(300));
    let messages = handler.messages.clone();
    let running = start(handler, Limits::default(), |_| {});
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    let started = Instant::now();
    c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n\
         Subject: pipelined\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n",
    );
    assert_eq!(
        c.read_to_close_text(),
        "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Message accepted\r\n250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        *messages.lock().unwrap(),
        vec![b"Subject: pipelined\r\n\r\n.dot\r\n".to_vec()]
    );
}

#[test]
fn a_pending_hook_stops_reading_from_the_client() {
    let running = start(Slow::new(Duration::from_secs(3)), Limits::default(), |_| {});
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    c.send("MAIL FROM:<slow@example.org>\r\n");
    c.stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let flood = "NOOP\r\n".repeat(64 * 1024 / 6);
    let start = Instant::now();
    let mut pushed = 0usize;
    while pushed < 128 << 20 && start.elapsed() < Duration::from_millis(2500) {
        // Each write goes on where the last one stopped, so every line stays whole.
        match c.stream.write(&flood.as_bytes()[pushed % 6..]) {
            Ok(n) => pushed += n,
            Err(_) => break, // the write blocked: nobody reads
        }
    }
    // The session holds 64 KiB and the server one read; the rest waits in kernel buffers.
    assert!(
        pushed < 24 << 20,
        "the client pushed {} MiB while the hook was pending",
        pushed >> 20
    );
    assert!(
        pushed > 64 * 1024,
        "the kernel buffers alone hold more than {pushed} bytes"
    );
    // Once the hook answers, every command pushed is answered.
    c.stream.set_write_timeout(Some(common::WAIT)).unwrap();
    if pushed % 6 != 0 {
        c.send(&"NOOP\r\n"[pushed % 6..]);
    }
    let noops = pushed.div_ceil(6);
    c.send("QUIT\r\n");
    let rest = c.read_to_close_text();
    assert!(rest.starts_with("250 2.1.0 Sender OK\r\n"));
    assert_eq!(rest.matches("250 2.0.0 OK\r\n").count(), noops);
    assert!(rest.ends_with("250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"));
}

#[test]
fn a_flood_of_pipelined_commands_gets_every_reply() {
    // Far more replies than the session holds unpolled (64 KiB): it pauses, the server
    // sends and keeps what the session could not take, nothing is lost.
    const N: usize = 100_000;
    let running = start(Slow::new(Duration::ZERO), Limits::default(), |_| {});
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let batch = "NOOP\r\n".repeat(1000);
        for _ in 0..N / 1000 {
            writer.write_all(batch.as_bytes()).unwrap();
        }
        writer.write_all(b"QUIT\r\n").unwrap();
    });
    let replies = c.read_to_close_text();
    sender.join().unwrap();
    assert_eq!(replies.matches("250 2.0.0 OK\r\n").count(), N);
    assert!(replies.ends_with("221 2.0.0 Bye\r\n"));
}

#[test]
fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    let handler = Slow::new(Duration::ZERO);
    let log = handler.log.clone();
    let limits = Limits {
        write_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let running = start(handler, limits, |_| {});
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    c.stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let flood = "NOOP\r\n".repeat(64 * 1024 / 6);
    let start = Instant::now();
    // Commands pushed, replies never read: they pile up until the server cannot write.
    while log.now().is_empty() && start.elapsed() < Duration::from_secs(15) {
        match c.stream.write(flood.as_bytes()) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break, // reset by the server
        }
    }
    let context = &log.wait(1)[0];
    assert_eq!(context["arguments"]["close"], "remote");
    assert_eq!(context["arguments"]["error"]["type"], "socket");
    assert_eq!(
        context["arguments"]["error"]["reason"],
        "the client stopped reading"
    );
}

#[test]
fn a_hook_that_never_answers_fails_after_the_hook_timeout() {
    let handler = Slow::new(Duration::ZERO);
    let log = handler.log.clone();
    let limits = Limits {
        hook_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let running = start(handler, limits, |_| {});
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    let started = Instant::now();
    assert_eq!(
        c.cmd("MAIL FROM:<stuck@example.org>"),
        "451 4.3.0 Temporary failure, please try again later\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // The session goes on (HookFailurePolicy::TemporaryFailure).
    assert_eq!(
        c.cmd("MAIL FROM:<ok@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(log.wait(1)[0]["arguments"]["reply"]["state"], "QUIT");
}

#[test]
fn the_sessions_deadline_closes_an_idle_client() {
    let handler = Slow::new(Duration::ZERO);
    let log = handler.log.clone();
    let running = start(handler, Limits::default(), |c| {
        c.command_timeout = Duration::from_millis(300)
    });
    let mut c = Client::greeted(running.addr);
    // A command trickled in pieces does not move the deadline past its limit either way:
    // the client is idle here.
    assert_eq!(
        c.read_to_close_text(),
        format!("421 4.4.2 {HOSTNAME} Error: timeout exceeded\r\n")
    );
    let context = &log.wait(1)[0];
    assert_eq!(context["arguments"]["close"], "local");
    assert_eq!(context["arguments"]["reply"]["state"], "TIMEOUT");
}
