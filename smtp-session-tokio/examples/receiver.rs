//! A receiver that applies KumoMTA's three `kumo.disconnect` examples at MAIL FROM, keeps
//! what MAIL FROM said in the per-connection handler, prints each message's envelope and each
//! disconnect context (as JSON), and shuts down gracefully on Ctrl-C.
//!
//! `cargo run -p smtp-session-tokio --example receiver --features serde -- [ADDR]`
//! (ADDR defaults to 127.0.0.1:2525), then talk to it with any SMTP client.

use smtp_session_tokio::DisconnectMode::{FollowWith421, ForceDisconnect};
use smtp_session_tokio::{
    CancellationToken, Config, Connection, Decision, DisconnectContext, Handler, HookResult,
    MailParams, Message, ReversePath, Server,
};

#[derive(Clone, Default)]
struct Receiver {
    /// Per connection: the senders of this connection's transactions.
    senders: Vec<String>,
}

impl Handler for Receiver {
    async fn mail_from(
        &mut self,
        conn: &mut Connection<'_>,
        from: ReversePath,
        _: MailParams,
    ) -> HookResult {
        let from = from.to_string();
        eprintln!("{} MAIL FROM:<{from}>", conn.info().id);
        let decision = match from.as_str() {
            "a@example.org" => {
                Decision::disconnect(421, "mta.example.com go away!", ForceDisconnect)?
            }
            "b@example.org" => Decision::disconnect(451, "no thank you", ForceDisconnect)?,
            "c@example.org" => Decision::disconnect(451, "no thank you", FollowWith421)?,
            _ => Decision::Accept,
        };
        self.senders.push(from);
        Ok(decision)
    }

    async fn message(&mut self, _: &mut Connection<'_>, message: Message) -> HookResult {
        let to: Vec<String> = message
            .envelope
            .recipients
            .iter()
            .map(|r| r.path.to_string())
            .collect();
        println!(
            "message from <{}> to {to:?}: {} bytes",
            message.envelope.mail_from,
            message.body.len()
        );
        // A real receiver stores the message durably here, before accepting it.
        Ok(Decision::Accept)
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        #[cfg(feature = "serde")]
        println!(
            "{}",
            serde_json::to_string(&context).expect("the context serialises")
        );
        #[cfg(not(feature = "serde"))]
        println!(
            "disconnect: {:?} ({} transactions)",
            context.arguments,
            self.senders.len()
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2525".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let config = Config {
        hostname: "mx.example".into(),
        ..Config::default()
    };
    let server = Server::new(Receiver::default())
        .config(config)
        .listener(listener)
        .shutdown_on(shutdown.clone());
    let serving = tokio::spawn(server.serve());
    tokio::signal::ctrl_c().await?;
    eprintln!("shutting down: sessions get 421 4.3.2 at their next command");
    shutdown.cancel();
    serving.await.expect("the server task ended cleanly");
    Ok(())
}
