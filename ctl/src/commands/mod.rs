//! One module per group of operations, mirroring `daemon/src/handlers/`.

pub mod logs;
pub mod system;
pub mod units;
