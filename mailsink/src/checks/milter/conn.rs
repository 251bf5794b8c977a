//! A connection to one filter: the codec's run loop over a socket, each read and write
//! bounded by the per-step timeout (a filter's progress report restarts it).

use std::time::Duration;

use smtp_filter_proto::milter::{Milter, MilterConfig, Output, ProtocolFlags, Verdict as Answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::filter_socket::{self, FilterAddr, FilterIo};

/// Why a filter could not be used.
pub type Failure = String;

/// How much one read from a filter takes.
const READ_SIZE: usize = 16 * 1024;

/// One filter's connection and protocol state.
pub struct Conn {
    io: Box<dyn FilterIo>,
    /// The codec.
    pub milter: Milter,
    timeout: Duration,
    /// Where reads land: with the connection, not in the futures that read (each stage's
    /// future would carry 16 KiB, moved into its box at every stage).
    buf: Box<[u8]>,
}

impl Conn {
    /// Connects to `addr` and negotiates.
    pub async fn open(addr: &FilterAddr, timeout: Duration) -> Result<Conn, Failure> {
        let io = filter_socket::connect(addr, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            io,
            // Recipients mailsink refused are not sent: `SMFIP_RCPT_REJ` is not offered.
            milter: Milter::new(MilterConfig {
                protocol: ProtocolFlags::ALL.difference(ProtocolFlags::REJECTED_RECIPIENTS),
                ..MilterConfig::default()
            }),
            timeout,
            buf: vec![0; READ_SIZE].into_boxed_slice(),
        };
        conn.run().await?;
        Ok(conn)
    }

    /// Writes what is queued, moving the other outputs to `out`; then, if a reply is owed,
    /// reads once. False when no reply is owed (and nothing is left to drain).
    pub async fn pump(&mut self, out: &mut Vec<Output>) -> Result<bool, Failure> {
        while let Some(output) = self.milter.poll_output() {
            match output {
                Output::Write(bytes) => within(self.timeout, self.io.write_all(&bytes)).await?,
                Output::Failed(err) => return Err(format!("protocol error: {err}")),
                other => out.push(other),
            }
        }
        if self.milter.awaiting_reply().is_none() {
            return Ok(false);
        }
        let n = within(self.timeout, self.io.read(&mut self.buf)).await?;
        if n == 0 {
            return Err("the filter closed the connection".into());
        }
        self.milter.handle_input(&self.buf[..n]);
        Ok(true)
    }

    /// Writes what is queued and reads until no reply is owed: the outputs other than
    /// writes.
    pub async fn run(&mut self) -> Result<Vec<Output>, Failure> {
        let mut outputs = Vec::new();
        while self.pump(&mut outputs).await? {}
        Ok(outputs)
    }

    /// One step and the filter's verdict on it.
    pub async fn step(
        &mut self,
        step: impl FnOnce(&mut Milter) -> Result<(), smtp_filter_proto::milter::Error>,
    ) -> Result<Answer, Failure> {
        step(&mut self.milter).map_err(|e| e.to_string())?;
        let outputs = self.run().await?;
        outputs
            .into_iter()
            .find_map(|o| match o {
                Output::Verdict { verdict, .. } => Some(verdict),
                _ => None,
            })
            .ok_or_else(|| "no verdict".to_string())
    }

    /// The message open with the filter, if any, is abandoned (`SMFIC_ABORT`).
    pub async fn abort(&mut self) -> Result<(), Failure> {
        self.milter.abort().map_err(|e| e.to_string())?;
        self.run().await.map(drop)
    }

    /// The SMTP session is over: abort, quit, and the connection closes.
    pub async fn close(mut self) {
        if self.abort().await.is_ok() && self.milter.quit().is_ok() {
            let _ = self.run().await;
            let _ = within(self.timeout, self.io.shutdown()).await;
        }
    }
}

async fn within<T>(
    limit: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}
