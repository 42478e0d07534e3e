//! Many targets: where they come from (files, secrets, a catalog query), and the coordination
//! database through which identical workers share them. Above the database layer; the command
//! layer (`run::fanout`) runs each target as `up` does.

pub mod coord;
pub mod targets;
