//! `--user NAME:PASSWORD`: the accounts AUTH PLAIN and LOGIN accept.

use smtp_session::AuthRequest;

use crate::check::{bad_credentials, Check, CheckFuture, Edits, Facts, Stage, Stages, Verdict};

/// The accounts.
#[derive(Debug)]
pub struct Users {
    /// Name and password pairs.
    pub users: Vec<(String, String)>,
}

impl Check for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn stages(&self) -> Stages {
        Stages {
            auth: true,
            ..Stages::default()
        }
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn check<'a>(&'a self, _: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        let verdict = match stage {
            Stage::Auth(request) => self.verdict(request),
            _ => Verdict::go_on(),
        };
        Box::pin(async move { verdict })
    }
}

impl Users {
    /// PLAIN (acting as oneself only) or LOGIN credentials of one of the accounts.
    fn verdict(&self, request: &AuthRequest) -> Verdict {
        let (authz, authc, password) = match request {
            AuthRequest::Plain {
                authzid,
                authcid,
                password,
            } => (authzid.as_str(), authcid.as_str(), password.as_str()),
            AuthRequest::Login { username, password } => ("", username.as_str(), password.as_str()),
            // Only PLAIN and LOGIN are offered, and the session decodes both.
            _ => return Verdict::Refuse(bad_credentials()),
        };
        let known = self.users.iter().any(|(n, p)| n == authc && p == password);
        if (authz.is_empty() || authz == authc) && known {
            Verdict::Accept(Edits::default())
        } else {
            Verdict::Refuse(bad_credentials())
        }
    }
}
