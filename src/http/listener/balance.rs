//! Even shares of the client connections for the cores.
//!
//! Every core accepts on the same listening socket and is woken for each new connection;
//! whichever calls `accept` first gets it. When a client opens its connections in a burst (a
//! load generator, a connection pool), one core could take most of them and serve them alone
//! while the other idled: on 2 cores with 64 connections, splits like 137:250 (CPU time)
//! happened, at 12 % less throughput than an even split. So a core that accepts a connection
//! while it serves more than the least busy core hands it to that core, which serves it start
//! to end. Only accepting costs more; requests never cross cores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use hestia_actors::per_core::{PerCore, cores};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::Conn;

/// Open connections per core, and a way to hand a connection to each core.
pub(super) struct Balance {
    open: PerCore<AtomicUsize>,
    to: Vec<UnboundedSender<Handed>>,
}

/// A connection one core accepted (and admitted) for another to serve.
pub(super) struct Handed {
    pub stream: std::net::TcpStream,
    pub remote: SocketAddr,
    pub conn: Arc<Conn>,
}

impl Balance {
    /// The balance, and for each core the receiver of the connections handed to it.
    pub fn new() -> (Balance, Vec<UnboundedReceiver<Handed>>) {
        let (to, from) = (0..cores()).map(|_| unbounded_channel()).unzip();
        let balance = Balance {
            open: PerCore::default(),
            to,
        };
        (balance, from)
    }

    /// Which core serves a connection that core `mine` accepted: `mine`, unless another serves
    /// fewer (then the one serving fewest). A thread that is not a core's keeps what it accepts.
    pub fn choose(&self, mine: usize) -> usize {
        if mine >= cores() {
            return mine;
        }
        let count = |core: usize| self.open.at(core).load(SeqCst);
        let lightest = (0..cores()).min_by_key(|&core| count(core)).unwrap_or(mine);
        if count(lightest) < count(mine) {
            lightest
        } else {
            mine
        }
    }

    pub fn opened(&self, core: usize) {
        self.open.at(core).fetch_add(1, SeqCst);
    }

    pub fn closed(&self, core: usize) {
        self.open.at(core).fetch_sub(1, SeqCst);
    }

    /// Hands `handed` to `core`; gives it back if that core no longer takes connections.
    pub fn hand(&self, core: usize, handed: Handed) -> Result<(), Handed> {
        match self.to.get(core) {
            Some(to) => to.send(handed).map_err(|refused| refused.0),
            None => Err(handed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_core_serving_more_than_another_when_it_accepts_then_the_other_serves_it() {
        let (balance, _from) = Balance::new();
        if cores() < 2 {
            return;
        }
        balance.opened(0);
        assert_eq!(balance.choose(0), 1, "core 1 serves none");
        balance.opened(1);
        assert_eq!(balance.choose(0), 0, "an even split stays where it is");
        balance.opened(0);
        assert_eq!(balance.choose(0), 1);
        assert_eq!(balance.choose(1), 1);
        balance.closed(0);
        balance.closed(0);
        assert_eq!(balance.choose(1), 0, "core 0's connections closed");
        assert_eq!(balance.choose(cores()), cores(), "not a core: no hand-over");
    }
}
