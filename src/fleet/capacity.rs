//! Connection capacity: at most K of migrun's connections on any one server across every
//! worker, held as numbered slots (advisory locks in the coordination database); on the
//! coordination server, W of them kept for the workers' own sessions when the worker count W
//! is known; and a check that K leaves the server's other clients half of its free
//! connections, read once per server.

use std::collections::HashMap;
use std::ops::Range;

/// `--max-conns-per-server` (K) and `--workers` (W).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub per_server: Option<u32>,
    pub workers: Option<u32>,
}

impl Capacity {
    /// The slots a target session may take on its server (`None`: no limit): on the
    /// coordination server, those not kept for the coordination sessions.
    pub fn target_slots(&self, on_coord_server: bool) -> Option<Range<u32>> {
        let limit = self.per_server?;
        Some(match self.workers {
            Some(workers) if on_coord_server => workers.min(limit)..limit,
            _ => 0..limit,
        })
    }

    /// The slots a coordination session may take: the W kept for them when the worker count
    /// is known (a late worker then always finds one), else any of the K.
    pub fn coord_slots(&self) -> Option<Range<u32>> {
        let limit = self.per_server?;
        Some(match self.workers {
            Some(workers) => 0..workers.min(limit),
            None => 0..limit,
        })
    }

    /// Why K is refused on `server` with `free` connections free: it must be at most half.
    pub fn refusal(&self, free: i64, server: &str) -> Option<Refusal> {
        let limit = self.per_server?;
        (i64::from(limit) > free / 2).then(|| Refusal { limit, free, server: server.to_string() })
    }
}

/// K is more than half of a server's free connections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fanout: --max-conns-per-server {limit} is more than half of the {free} free connections on {server}; lower it"
)]
pub struct Refusal {
    pub limit: u32,
    pub free: i64,
    pub server: String,
}

/// What a target's run must know of its server's free connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCheck {
    /// Nothing to read: no K, the coordination server (read when the worker joined), or a
    /// server another of this worker's targets reads.
    Known,
    /// Read them first, on the target's own session.
    Read,
    /// K was too many for them: the target is left alone.
    Refused(Refusal),
}

/// What a worker knows of the servers other than the coordination one.
#[derive(Debug, Default)]
pub struct Servers {
    states: HashMap<String, ServerState>,
}

#[derive(Debug)]
enum ServerState {
    /// The target with this index is reading them; the server's other targets wait.
    Checking(usize),
    Fine,
    Refused(Refusal),
}

/// What a target may do before it takes a slot.
pub enum Gate {
    /// Take a slot and run.
    Open,
    /// Another target is reading the server's free connections: wait for the answer.
    Wait,
    /// Recorded as refused, never connected to.
    Refused(Refusal),
}

impl Servers {
    /// Whether a target on `server` may go on.
    pub fn gate(&self, server: &str) -> Gate {
        match self.states.get(server) {
            Some(ServerState::Refused(refusal)) => Gate::Refused(refusal.clone()),
            Some(ServerState::Checking(_)) => Gate::Wait,
            _ => Gate::Open,
        }
    }

    /// What the target `index`, holding a slot on `server`, must check: the first target of a
    /// server other than the coordination one reads its free connections.
    pub fn check_for(&mut self, capacity: &Capacity, server: &str, coord_server: &str, index: usize) -> ServerCheck {
        if capacity.per_server.is_none() || server == coord_server || self.states.contains_key(server) {
            return ServerCheck::Known;
        }
        self.states.insert(server.to_string(), ServerState::Checking(index));
        ServerCheck::Read
    }

    /// Takes in what target `index` learnt of `server`; true when it was the one reading (the
    /// targets waiting for the answer go on).
    pub fn settle(&mut self, server: &str, index: usize, learnt: &Option<Result<(), Refusal>>) -> bool {
        if !matches!(self.states.get(server), Some(ServerState::Checking(checker)) if *checker == index) {
            return false;
        }
        match learnt {
            Some(Ok(())) => self.states.insert(server.to_string(), ServerState::Fine),
            Some(Err(refusal)) => {
                tracing::error!(server = %server, "{refusal}");
                self.states.insert(server.to_string(), ServerState::Refused(refusal.clone()))
            }
            // Never read (the connection failed first): the next target reads them.
            None => self.states.remove(server),
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordination_server_keeps_w_slots_for_the_workers() {
        let capacity = Capacity { per_server: Some(8), workers: Some(3) };
        assert_eq!(capacity.target_slots(true), Some(3..8));
        assert_eq!(capacity.target_slots(false), Some(0..8));
        assert_eq!(capacity.coord_slots(), Some(0..3));
        let unknown = Capacity { per_server: Some(8), workers: None };
        assert_eq!(unknown.coord_slots(), Some(0..8));
        assert_eq!(Capacity::default().target_slots(true), None);
    }

    #[test]
    fn k_must_leave_half_of_the_free_connections() {
        let capacity = Capacity { per_server: Some(10), workers: None };
        assert_eq!(capacity.refusal(20, "db:5432"), None);
        let refused = capacity.refusal(19, "db:5432").expect("refused");
        assert_eq!(
            refused.to_string(),
            "fanout: --max-conns-per-server 10 is more than half of the 19 free connections on db:5432; lower it"
        );
    }

    #[test]
    fn one_target_per_server_reads_and_the_others_wait_for_it() {
        let capacity = Capacity { per_server: Some(4), workers: None };
        let mut servers = Servers::default();
        assert_eq!(servers.check_for(&capacity, "coord:5432", "coord:5432", 0), ServerCheck::Known);
        assert_eq!(servers.check_for(&capacity, "a:5432", "coord:5432", 1), ServerCheck::Read);
        assert!(matches!(servers.gate("a:5432"), Gate::Wait));
        assert!(!servers.settle("a:5432", 2, &Some(Ok(()))), "only the reader settles");
        let refusal = Refusal { limit: 4, free: 6, server: "a:5432".into() };
        assert!(servers.settle("a:5432", 1, &Some(Err(refusal.clone()))));
        assert!(matches!(servers.gate("a:5432"), Gate::Refused(r) if r == refusal));
        // A reader whose connection failed first leaves the reading to the next target.
        assert_eq!(servers.check_for(&capacity, "b:5432", "coord:5432", 3), ServerCheck::Read);
        assert!(servers.settle("b:5432", 3, &None));
        assert_eq!(servers.check_for(&capacity, "b:5432", "coord:5432", 4), ServerCheck::Read);
    }
}
