//! `meridian demo`.
pub mod spec;

/// Runs the demo.
pub fn run(_duration: u64, _rate: u32) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
