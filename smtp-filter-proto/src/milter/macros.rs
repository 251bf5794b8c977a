//! Macros: the named values (`{client_addr}`, `i`...) the MTA sends before a step
//! (`SMFIC_MACRO`), which ones go at which stage, and a filter's own choice of them.

/// The stages macros are sent at (`SMFIM_*`), in the wire's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MacroStage {
    /// Before connect (`SMFIM_CONNECT`).
    Connect = 0,
    /// Before HELO (`SMFIM_HELO`).
    Helo = 1,
    /// Before MAIL (`SMFIM_ENVFROM`).
    Mail = 2,
    /// Before RCPT (`SMFIM_ENVRCPT`).
    Rcpt = 3,
    /// Before DATA (`SMFIM_DATA`).
    Data = 4,
    /// Before end of message (`SMFIM_EOM`).
    EndOfMessage = 5,
    /// Before end of headers (`SMFIM_EOH`).
    EndOfHeaders = 6,
}

impl MacroStage {
    /// Every stage, in wire order.
    pub const ALL: [MacroStage; 7] = [
        MacroStage::Connect,
        MacroStage::Helo,
        MacroStage::Mail,
        MacroStage::Rcpt,
        MacroStage::Data,
        MacroStage::EndOfMessage,
        MacroStage::EndOfHeaders,
    ];

    pub(crate) fn from_wire(n: u32) -> Option<MacroStage> {
        MacroStage::ALL.get(n as usize).copied()
    }
}

/// Which macros are sent at each stage, by name (`j`, `{client_addr}`): Postfix's
/// `milter_*_macros`. A filter that asks for its own list at negotiation (`SMFIR_OPTNEG`
/// with macro lists) gets its list at that stage instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacroLists {
    lists: [Vec<String>; 7],
}

impl Default for MacroLists {
    /// Postfix's defaults, with the client's address, port and name at connect.
    fn default() -> MacroLists {
        let l = |names: &str| names.split_whitespace().map(str::to_string).collect();
        let mut lists = MacroLists::empty();
        lists.set(
            MacroStage::Connect,
            l("j {daemon_name} {daemon_addr} v _ {client_addr} {client_port} {client_name} {client_ptr}"),
        );
        lists.set(
            MacroStage::Helo,
            l("{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}"),
        );
        lists.set(
            MacroStage::Mail,
            l("i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"),
        );
        lists.set(
            MacroStage::Rcpt,
            l("i {rcpt_addr} {rcpt_host} {rcpt_mailer}"),
        );
        lists.set(MacroStage::Data, l("i"));
        lists.set(MacroStage::EndOfHeaders, l("i"));
        lists.set(MacroStage::EndOfMessage, l("i"));
        lists
    }
}

impl MacroLists {
    /// No macro at any stage.
    pub fn empty() -> MacroLists {
        MacroLists {
            lists: Default::default(),
        }
    }

    /// Sets the names sent at `stage`.
    pub fn set(&mut self, stage: MacroStage, names: Vec<String>) {
        self.lists[stage as usize] = names;
    }

    /// The names sent at `stage`.
    pub fn get(&self, stage: MacroStage) -> &[String] {
        &self.lists[stage as usize]
    }
}

/// Macro values the caller knows, by name. Names may be written with or without braces
/// (`client_addr` or `{client_addr}`); lookups ignore the difference, as libmilter's
/// `smfi_getsymval` does for one-letter names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Macros {
    values: Vec<(String, String)>,
}

impl Macros {
    /// No values.
    pub fn new() -> Macros {
        Macros::default()
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Macros {
        let value = value.into();
        let key = bare(name);
        match self.values.iter_mut().find(|(n, _)| bare(n) == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
        self
    }

    /// With `name` set to `value`.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Macros {
        self.set(name, value);
        self
    }

    /// The value of `name`, braces or not.
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = bare(name);
        self.values
            .iter()
            .find(|(n, _)| bare(n) == key)
            .map(|(_, v)| v.as_str())
    }
}

fn bare(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name)
}
