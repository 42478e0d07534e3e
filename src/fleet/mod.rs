//! Many targets: where they come from (files, secrets, a catalog query), the coordination
//! database through which identical workers share them, connection capacity per server, and
//! the worker loop itself (behind traits: the command layer's `run::fanout` runs each target
//! as `up` does, and the coordination database is one implementation of the claims).

pub mod capacity;
pub mod coord;
pub mod ledger;
pub mod summary;
pub mod targets;
pub mod worker;
