//! The operating-system plumbing every other module uses: bounded commands in their own process
//! group ([`exec`]) and the processes the harness starts, records by pid, stops and reaps, with
//! the port blocks they listen on ([`process`]), and the one file lock ([`lock`]). Nothing here knows about clusters or Flux.

pub mod exec;
pub mod lock;
pub mod process;
