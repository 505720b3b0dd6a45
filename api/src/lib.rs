//! Meridian's shared contract: the routing table a gateway serves from, and the tools to read and
//! check it. Both the gateway and the control plane depend on this crate; it has no Pingora in it.
//!
//! A file goes through two layers, as STYLE.md asks:
//! 1. the serde model in [`table`], with `deny_unknown_fields` and documented defaults;
//! 2. [`validate`], which checks the model as a whole and collects *every* error with its path
//!    (`routes[2].split[1].weight: must be >= 0`), never panicking.

pub mod errors;
pub mod intent;
pub mod load;
pub mod table;
pub mod validate;
pub mod wire;

pub use errors::{Errors, FieldError};
pub use load::{parse_yaml_or_json, read_table};
pub use table::{
    AdaptiveHedge, Budget, Endpoint, HeaderMatch, HedgePolicy, Limits, Outlier, PathMatch, Pin,
    RegionSpec, RetryPolicy, Route, RouteMatch, SplitEntry, Sticky, Subset, Table, Timeouts,
};
