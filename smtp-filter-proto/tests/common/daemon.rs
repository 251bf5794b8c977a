//! Blocking drivers of the sans-IO clients over a TCP connection to a real filter daemon
//! (started by `smtp_session_testkit::daemons`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use smtp_filter_proto::milter::{Milter, MilterConfig, Output};
use smtp_filter_proto::policy::{PolicyClient, PolicyOutput, PolicyRequest, PolicyResponse};

/// How long a filter may take to answer.
pub const WAIT: Duration = Duration::from_secs(60);

/// A milter session over a TCP connection, driven step by step.
pub struct MilterConn {
    pub milter: Milter,
    stream: TcpStream,
}

impl MilterConn {
    /// Connects and negotiates; returns the connection and the negotiation's outputs.
    pub fn open(port: u16, config: MilterConfig) -> (MilterConn, Vec<Output>) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the filter");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = MilterConn {
            milter: Milter::new(config),
            stream,
        };
        let outputs = conn.run();
        (conn, outputs)
    }

    /// Sends what is queued and reads until no reply is owed; returns the outputs other
    /// than writes. A filter that stays silent past [`WAIT`] fails the test.
    pub fn run(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            while let Some(output) = self.milter.poll_output() {
                match output {
                    Output::Write(bytes) => {
                        self.stream.write_all(&bytes).expect("write to the filter")
                    }
                    other => outputs.push(other),
                }
            }
            if self.milter.awaiting_reply().is_none() {
                return outputs;
            }
            let n = self.stream.read(&mut buf).expect("read from the filter");
            assert!(
                n > 0,
                "the filter closed the connection while a reply was owed"
            );
            self.milter.handle_input(&buf[..n]);
        }
    }

    /// One step, then [`MilterConn::run`].
    pub fn step(
        &mut self,
        step: impl FnOnce(&mut Milter) -> Result<(), smtp_filter_proto::milter::Error>,
    ) -> Vec<Output> {
        step(&mut self.milter).expect("the step fits");
        self.run()
    }
}

/// A policy delegation connection.
pub struct PolicyConn {
    client: PolicyClient,
    stream: TcpStream,
}

impl PolicyConn {
    pub fn open(port: u16) -> PolicyConn {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).expect("connect to the policy service");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        PolicyConn {
            client: PolicyClient::new(4096),
            stream,
        }
    }

    /// One request and its response.
    pub fn ask(&mut self, request: &PolicyRequest) -> PolicyResponse {
        self.client.request(request).expect("a request fits");
        let mut buf = [0u8; 4096];
        loop {
            while let Some(output) = self.client.poll_output() {
                match output {
                    PolicyOutput::Write(bytes) => self.stream.write_all(&bytes).expect("write"),
                    PolicyOutput::Response(response) => return response,
                    PolicyOutput::Failed(e) => panic!("the policy service broke the protocol: {e}"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            let n = self
                .stream
                .read(&mut buf)
                .expect("read from the policy service");
            assert!(n > 0, "the policy service closed the connection");
            self.client.handle_input(&buf[..n]);
        }
    }
}
