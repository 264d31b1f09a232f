//! The fixture file a museum is set up from: its catalogue (public) plus an
//! optional `[[staff]]` list (private, PINs in clear), kept apart on load.

use crate::catalogue::Catalogue;
use crate::staff::StaffFixture;

pub fn parse_fixture(text: &str) -> Result<(Catalogue, Vec<StaffFixture>), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let staff = match table.remove("staff") {
        Some(value) => value
            .try_into::<Vec<StaffFixture>>()
            .map_err(|e| format!("[[staff]]: {e}"))?,
        None => Vec::new(),
    };
    let catalogue: Catalogue = table.try_into().map_err(|e| e.to_string())?;
    catalogue.validate().map_err(|e| e.to_string())?;
    Ok((catalogue, staff))
}
