//! The checks mailsink runs, one file each; none imports another. `main.rs` puts them in
//! their order: the reverse DNS name, the limits, `--verify`, the Lua policy, the users for
//! AUTH.

pub mod dnsbl;
pub mod greylist;
pub mod limits;
pub mod policy;
pub mod rates;
pub mod reverse_dns;
pub mod users;
pub mod verify;
