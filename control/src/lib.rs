//! Meridian's control plane: not built yet (issue 4).
//!
//! It will health-check every endpoint, build one routing table per region from the operator's
//! intent, publish the tables to gateways and run canary rollouts (see DESIGN.md). Until then,
//! gateways serve a routing table from a file, and this crate has no code.
