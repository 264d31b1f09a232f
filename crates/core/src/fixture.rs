//! The fixture file a museum is set up from: its catalogue (public) plus an
//! optional `[[staff]]` list (private, PINs in clear), kept apart on load.

use std::collections::HashSet;

use crate::catalogue::Catalogue;
use crate::limits;
use crate::staff::{check_pin, StaffFixture};

pub fn parse_fixture(text: &str) -> Result<(Catalogue, Vec<StaffFixture>), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let staff = match table.remove("staff") {
        Some(value) => value
            .try_into::<Vec<StaffFixture>>()
            .map_err(|e| format!("[[staff]]: {e}"))?,
        None => Vec::new(),
    };
    check_staff(&staff)?;
    let catalogue: Catalogue = table.try_into().map_err(|e| e.to_string())?;
    catalogue.validate().map_err(|e| e.to_string())?;
    Ok((catalogue, staff))
}

/// PINs identify staff on their own (nobody types a name at a busy counter),
/// so two people must not share one. It matters most across roles: a
/// cashier's verifier is on every counter, and cracking it must not yield a
/// supervisor's PIN.
fn check_staff(staff: &[StaffFixture]) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut pins = HashSet::new();
    for member in staff {
        let name = member.name.trim();
        limits::text("staff name", name, limits::STAFF_NAME_CHARS)
            .map_err(|e| format!("[[staff]] {name:?}: {e}"))?;
        check_pin(member.pin.trim()).map_err(|e| format!("[[staff]] {name:?}: {e}"))?;
        if !names.insert(name.to_string()) {
            return Err(format!("[[staff]]: {name:?} is listed twice"));
        }
        if !pins.insert(member.pin.trim().to_string()) {
            return Err(format!(
                "[[staff]] {name:?}: another staff member already has this PIN; PINs must be unique"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_staff(staff: &str) -> Result<Vec<StaffFixture>, String> {
        let base = include_str!("../../../fixtures/demo-museum.toml");
        let cut = base.find("[[staff]]").expect("demo fixture has staff");
        parse_fixture(&format!("{}{staff}", &base[..cut])).map(|(_, s)| s)
    }

    #[test]
    fn staff_pins_are_checked_and_unique() {
        let ok = "[[staff]]\nname = \"A\"\nrole = \"cashier\"\npin = \"1111\"\n\
                  [[staff]]\nname = \"B\"\nrole = \"supervisor\"\npin = \"9999\"\n";
        assert_eq!(with_staff(ok).unwrap().len(), 2);
        let shared = "[[staff]]\nname = \"A\"\nrole = \"cashier\"\npin = \"9999\"\n\
                      [[staff]]\nname = \"B\"\nrole = \"supervisor\"\npin = \"9999\"\n";
        assert!(with_staff(shared)
            .unwrap_err()
            .contains("PINs must be unique"));
        let short = "[[staff]]\nname = \"A\"\nrole = \"cashier\"\npin = \"12\"\n";
        assert!(with_staff(short).unwrap_err().contains("PIN must be"));
        let twice = "[[staff]]\nname = \"A\"\nrole = \"cashier\"\npin = \"1234\"\n\
                     [[staff]]\nname = \"A\"\nrole = \"cashier\"\npin = \"5678\"\n";
        assert!(with_staff(twice).unwrap_err().contains("listed twice"));
    }
}
