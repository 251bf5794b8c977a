//! `conn_meta`: the connection's facts under KumoMTA's key names, and the script's own
//! keys.
//!
//! The facts are read when the script asks for them (`conn_meta:get_meta('ehlo_domain')`),
//! not written into a Lua table at every event: a connection whose handlers never look
//! costs no Lua strings and no table. What the script stores with `set_meta` lives in a
//! table made at its first `set_meta`, and a key it stored is what `get_meta` returns from
//! then on, a fact's key too.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, Table, UserData, UserDataMethods, Value};

use crate::dnsbl::Screening;
use crate::facts::{ConnFacts, FilterVerdict};

/// One connection's `conn_meta`: the handle the Worker keeps, and the userdata handed to
/// every handler of the connection.
#[derive(Clone)]
pub(super) struct ConnMeta(Rc<RefCell<State>>);

struct State {
    /// `hostname`: the server's name.
    hostname: Rc<str>,
    shown: Shown,
    /// What the script stored, from its first `set_meta` on.
    own: Option<Table>,
}

/// The facts `conn_meta` shows, as of the connection's last event.
#[derive(Default)]
struct Shown {
    addresses: Addresses,
    helo: Option<String>,
    tls: Option<(String, String)>,
    authn_id: Option<String>,
    screening: Option<Arc<Screening>>,
    filters: Option<Arc<[FilterVerdict]>>,
}

type Addresses = [(Option<IpAddr>, Option<u16>); 2];

impl ConnMeta {
    pub(super) fn new(hostname: Rc<str>) -> Self {
        ConnMeta(Rc::new(RefCell::new(State {
            hostname,
            shown: Shown::default(),
            own: None,
        })))
    }

    /// Brings the facts up to date with `facts`; strings are copied only when they
    /// changed.
    pub(super) fn update(&self, facts: &ConnFacts) {
        let shown = &mut self.0.borrow_mut().shown;
        let info = &facts.info;
        shown.addresses = [
            (info.remote_ip, info.remote_port),
            (info.local_ip, info.local_port),
        ];
        let helo = facts.helo.as_ref().map(|h| h.host.as_str());
        if shown.helo.as_deref() != helo {
            shown.helo = helo.map(str::to_string);
        }
        let tls = (facts.tls.as_ref()).map(|t| (t.protocol.as_str(), t.cipher.as_str()));
        if shown.tls.as_ref().map(|(p, c)| (p.as_str(), c.as_str())) != tls {
            shown.tls = tls.map(|(p, c)| (p.to_string(), c.to_string()));
        }
        let authn_id = facts.auth.as_ref().and_then(|a| a.username.as_deref());
        if shown.authn_id.as_deref() != authn_id {
            shown.authn_id = authn_id.map(str::to_string);
        }
        shown.screening.clone_from(&facts.screening);
        shown.filters = Some(facts.filters.clone());
    }

    /// The value of `key`: the script's own if it stored one, else the fact it names.
    fn get(&self, lua: &Lua, key: &str) -> mlua::Result<Value> {
        let state = self.0.borrow();
        if let Some(own) = &state.own {
            let value: Value = own.raw_get(key)?;
            if !value.is_nil() {
                return Ok(value);
            }
        }
        let shown = &state.shown;
        let text = |text: Option<&str>| match text {
            Some(text) => Ok(Value::String(lua.create_string(text)?)),
            None => Ok(Value::Nil),
        };
        match key {
            "hostname" => text(Some(&state.hostname)),
            "received_from" => text(joined(shown.addresses[0]).as_deref()),
            "received_via" => text(joined(shown.addresses[1]).as_deref()),
            "ehlo_domain" => text(shown.helo.as_deref()),
            "tls_protocol_version" => text(shown.tls.as_ref().map(|t| t.0.as_str())),
            "tls_cipher" => text(shown.tls.as_ref().map(|t| t.1.as_str())),
            "authn_id" => text(shown.authn_id.as_deref()),
            // mailsink's own: what --dnsbl made of the client.
            "dnsbl_score" => Ok(shown
                .screening
                .as_ref()
                .map_or(Value::Nil, |s| Value::Integer(s.score.into()))),
            "dnsbl_listed" => text(
                shown
                    .screening
                    .as_ref()
                    .map(|s| s.listed.join(","))
                    .as_deref(),
            ),
            "filter_verdicts" | "milter_verdicts" | "policy_service_verdicts" => {
                let verdicts = shown.filters.as_deref().unwrap_or_default();
                verdict_list(lua, verdicts, verdicts_of(key))
            }
            _ => Ok(Value::Nil),
        }
    }

    /// `set_meta`: stored in the script's own table.
    fn set(&self, lua: &Lua, key: String, value: Value) -> mlua::Result<()> {
        let mut state = self.0.borrow_mut();
        let own = match &mut state.own {
            Some(own) => own,
            own => own.insert(lua.create_table()?),
        };
        own.raw_set(key, value)
    }
}

impl UserData for ConnMeta {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get_meta", |lua, this, key: mlua::String| {
            this.get(lua, &key.to_str()?)
        });
        methods.add_method("set_meta", |lua, this, (key, value): (String, Value)| {
            this.set(lua, key, value)
        });
    }
}

/// `ip:port`, or the address alone.
fn joined((ip, port): (Option<IpAddr>, Option<u16>)) -> Option<String> {
    match (ip, port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port).to_string()),
        (Some(ip), None) => Some(ip.to_string()),
        _ => None,
    }
}

/// Which filters' verdicts a verdicts key lists: `None` for all of them.
pub(super) fn verdicts_of(key: &str) -> Option<&'static str> {
    match key {
        "milter_verdicts" => Some("milter"),
        "policy_service_verdicts" => Some("policy_service"),
        _ => None,
    }
}

/// The verdicts of `filter` (all with `None`) as a list of tables like the log's; nil when
/// there are none.
pub(super) fn verdict_list(
    lua: &Lua,
    verdicts: &[FilterVerdict],
    filter: Option<&str>,
) -> mlua::Result<Value> {
    let options = mlua::SerializeOptions::new().serialize_none_to_null(false);
    let some: Vec<&FilterVerdict> = verdicts
        .iter()
        .filter(|v| filter.is_none_or(|f| v.filter == f))
        .collect();
    if some.is_empty() {
        return Ok(Value::Nil);
    }
    lua.to_value_with(&some, options)
}
