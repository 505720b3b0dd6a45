//! demo spec
use meridian_api::Errors;
/// Demo spec.
#[derive(Debug, serde::Deserialize)]
pub struct DemoSpec {}
impl DemoSpec {
    /// Parse.
    pub fn parse(_t: &str) -> Result<DemoSpec, Errors> {
        Ok(DemoSpec {})
    }
}
