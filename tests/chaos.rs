//! The chaos suite: the faults of an ordinary bad day, reproduced with the real binary, real child
//! processes and real signals (SIGKILL, SIGTERM), and the behaviour Hestia shows under each.
//!
//! `network` covers the client and upstream side (stale pooled connections, silent sockets, h2c,
//! malformed bodies); `process` covers the processes Hestia owns (kill mid-start, pid reuse,
//! output after Hestia dies, services Hestia does not start); `shutdown` covers SIGTERM
//! with requests queued, streams open and a second signal; `database` a database that cannot be
//! written; `prototype` runs the Python prototype's own sample config; `secrets` plants a secret
//! in every kind of configured URL, header and token and searches everything Hestia let out.

mod support;

#[path = "chaos/database.rs"]
mod database;
#[path = "chaos/network.rs"]
mod network;
#[path = "chaos/process.rs"]
mod process;
#[path = "chaos/prototype.rs"]
mod prototype;
#[path = "chaos/secrets.rs"]
mod secrets;
#[path = "chaos/shutdown.rs"]
mod shutdown;
