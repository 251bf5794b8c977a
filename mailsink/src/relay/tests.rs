//! The relay under an LMTP session of mailsink (`Config::lmtp`): the engine in LMTP mode
//! and mailsink's handler, served on a loopback port, relaying to a real Dovecot. The
//! client hears each recipient's own reply. (mailsink's command line has no LMTP listener
//! of its own yet, so the server is assembled here.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_session::Config;
use smtp_session_tokio::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{Relay, RelayArgs, Target};
use crate::check::Check;
use crate::checks::policy::Policy;
use crate::delivery::Delivery;
use crate::delivery::Maildir;
use crate::sink::Sink;

#[path = "../../tests/relay_servers/mod.rs"]
mod relay_servers;

use relay_servers::Dovecot;

/// mailsink's handler relaying to `url`, served as an LMTP server on a free port.
async fn lmtp_mailsink(url: &str) -> SocketAddr {
    lmtp_mailsink_with(url, Vec::new()).await
}

/// [`lmtp_mailsink`] with `checks`.
async fn lmtp_mailsink_with(url: &str, checks: Vec<Arc<dyn Check>>) -> SocketAddr {
    let args = RelayArgs {
        relay: Some(Target::parse(url).unwrap()),
        relay_timeout: 20,
        relay_max_connections: 2,
        relay_idle: 5,
        relay_tls_ca: None,
        relay_spool: None,
    };
    let relay = Relay::from_args(&args, "mx.test").unwrap().unwrap();
    let spool = tempfile::tempdir().unwrap().keep();
    let maildir = Maildir::open(&spool, "mx.test", std::time::Duration::ZERO).unwrap();
    let sink = Sink::new(checks, Delivery::Relay(Arc::new(relay), Arc::new(maildir)));
    let config = Config {
        hostname: "mx.test".into(),
        lmtp: true,
        ..Config::default()
    };
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(Server::new(sink).config(config).listener(tcp).serve());
    addr
}

/// An LMTP client, one reply at a time.
struct Lmtp {
    reader: BufReader<TcpStream>,
}

impl Lmtp {
    async fn connect(addr: SocketAddr) -> Lmtp {
        let mut lmtp = Lmtp {
            reader: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        };
        assert!(lmtp.reply().await.starts_with("220 "));
        lmtp
    }

    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(relay_servers::WAIT, self.reader.read_line(&mut line))
                .await
                .expect("a reply in time")
                .unwrap();
            assert!(read > 0, "closed inside a reply: {reply:?}");
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn an_lmtp_client_hears_each_recipients_own_reply() {
    // bob's mailbox is full: Dovecot refuses him after the data. carol does not exist:
    // Dovecot refuses her at RCPT, but mailsink accepted her RCPT (it relays at the end).
    let dovecot = Dovecot::start_with(true);
    let addr = lmtp_mailsink(&dovecot.url()).await;
    let mut c = Lmtp::connect(addr).await;
    assert!(c.cmd("LHLO client.example").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@x.example>").await.starts_with("250"));
    for rcpt in ["alice", "carol", "bob"] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}@example.org>")).await;
        assert!(reply.starts_with("250 2.1.5"), "{reply}");
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    let alice = c.cmd("Subject: per recipient\r\n\r\nhello\r\n.").await;
    let carol = c.reply().await;
    let bob = c.reply().await;
    assert!(
        alice.starts_with("250 2.0.0 <alice@example.org> ") && alice.ends_with(" Saved\r\n"),
        "{alice}"
    );
    assert_eq!(
        carol,
        "550 5.1.1 <carol@example.org> User doesn't exist: carol@example.org\r\n"
    );
    assert_eq!(
        bob,
        "552 5.2.2 <bob@example.org> Quota exceeded (mailbox for user is full)\r\n"
    );
    assert!(c.cmd("QUIT").await.starts_with("221"));

    let delivered = dovecot.delivered("alice");
    assert_eq!(delivered.len(), 1);
    // Our Received: field names the LMTP session.
    assert!(
        delivered[0].contains("Received: from client.example ([127.0.0.1]) by mx.test with LMTP"),
        "{}",
        delivered[0]
    );
    assert!(delivered[0].ends_with("\n\nhello\n"), "{}", delivered[0]);
    assert!(dovecot.delivered("bob").is_empty());
}

#[tokio::test]
async fn recipients_the_policy_refuses_are_not_relayed_and_hear_its_reply() {
    // The policy refuses bob, whom Dovecot would take: he hears the policy's reply and
    // gets nothing; alice hears Dovecot's.
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("policy.lua");
    std::fs::write(
        &script,
        "kumo.on('smtp_server_message_received', function(msg)\n\
           if tostring(msg:recipient()):sub(1, 4) == 'bob@' then\n\
             kumo.reject(550, '5.7.1 not for bob here')\n\
           end\n\
         end)\n",
    )
    .unwrap();
    let lua =
        crate::policy::LuaPolicy::start(&script, "mx.test", Duration::from_secs(5), None).unwrap();
    let policy: Arc<dyn Check> = Arc::new(Policy::new(Arc::new(lua)));
    let addr = lmtp_mailsink_with(&dovecot.url(), vec![policy]).await;
    let mut c = Lmtp::connect(addr).await;
    assert!(c.cmd("LHLO client.example").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@x.example>").await.starts_with("250"));
    for rcpt in ["alice", "bob"] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}@example.org>")).await;
        assert!(reply.starts_with("250 2.1.5"), "{reply}");
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    let alice = c.cmd("Subject: some of them\r\n\r\nhello\r\n.").await;
    let bob = c.reply().await;
    assert!(
        alice.starts_with("250 2.0.0 <alice@example.org> ") && alice.ends_with(" Saved\r\n"),
        "{alice}"
    );
    assert_eq!(bob, "550 5.7.1 not for bob here\r\n");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    assert_eq!(dovecot.delivered("alice").len(), 1);
    assert!(dovecot.delivered("bob").is_empty());
}
