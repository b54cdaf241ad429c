//! Shared helpers for the host's integration tests, one copy of each, in modules named for
//! what they provide. The ones most tests use are re-exported here (`use common::*`); the
//! others are reached by their module (`common::live::LiveHost`).
//!
//! Every helper that starts something stops it again in `Drop`, also when a test panics,
//! and every wait is bounded in time.
// Each test crate uses its own subset of the helpers and of the re-exports.
#![allow(dead_code, unused_imports)]

pub mod chart;
pub mod container;
pub mod corpus;
pub mod cri;
pub mod exposition;
pub mod frames;
pub mod host;
pub mod http;
pub mod live;
pub mod process;
pub mod promql;
pub mod rtt;
pub mod scrape;
pub mod tcpdump;
pub mod topology;
pub mod traffic;
pub mod tshark;
pub mod tunnel;
pub mod vxlan;

pub use exposition::*;
pub use host::*;
pub use process::*;
pub use tcpdump::*;
pub use topology::NetnsPair;
pub use traffic::*;
pub use tshark::*;
