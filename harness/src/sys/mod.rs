//! The operating-system plumbing every other module uses: bounded commands in their own process
//! group ([`exec`]) and the processes the harness starts, records by pid, stops and reaps, with
//! the port blocks they listen on ([`process`]), the one file lock ([`lock`]), the one PATH lookup
//! ([`path`]) and the one poll loop ([`poll`]). Nothing here knows about clusters or Flux.

pub mod exec;
pub mod lock;
pub mod path;
pub mod poll;
pub mod process;
