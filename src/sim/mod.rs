//! Multi-region scenarios on one machine (`pipemesh-sim`, `src/bin/pipemesh-sim.rs`): the
//! nine-node cluster of `simulations/cluster.sh` on the user-space WAN emulator, bots as
//! clients, and a Markdown report with PNG plots per scenario (see `simulations/README.md`).
//!
//! - [`harness`]: the cluster, the emulator's control socket, bot processes (I/O only);
//! - [`analysis`]: the figures from what was collected (pure, unit-tested);
//! - [`scenarios`]: the three scenarios and their reports.

pub mod analysis;
pub mod harness;
pub mod scenarios;
