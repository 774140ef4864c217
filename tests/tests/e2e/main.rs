//! End-to-end tests: the real corrald and corralctl, real processes, temp dirs.
//! One test binary (faster to link); one module per area.

mod access;
mod acked;
mod backend;
mod bounds;
mod browser;
mod cgroups;
mod checks;
mod cli;
mod examples;
mod faults;
mod hosts;
mod http;
mod lifecycle;
mod notify;
mod packaging;
mod packaging_booted;
mod pool;
mod pool_nodes;
mod primitives;
mod protocol;
mod reload;
mod schedules;
mod scripts;
mod supervise;
mod syncs;
mod templates;
mod top;
