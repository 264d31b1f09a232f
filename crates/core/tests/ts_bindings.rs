//! The TypeScript types of `ui/src/generated/` are rendered from the Rust
//! wire types (ts-rs, feature `ts`); this test fails when the checked-in
//! files are not what the Rust types render today.
//!
//! After changing a wire type, regenerate them:
//!
//! ```text
//! TESSERA_WRITE_TS=1 cargo test -p tessera-core --test ts_bindings
//! ```
#![cfg(feature = "ts")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera_core::api::devices::Role;
use tessera_core::api::report::DayReport;
use tessera_core::api::supervisor::{LeaseInfo, Revoked};
use tessera_core::api::sync::PaymentMethod;
use tessera_core::pricing::{CartLine, PricedLine};
use tessera_core::staff::StaffRole;
use tessera_core::vat::VatSplit;
use ts_rs::{Config, TS};

type Export = fn(&Config) -> Result<(), ts_rs::ExportError>;

fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/generated")
}

/// Every generated file by name: the types the UI names, what they use, and
/// an `index.ts` that re-exports them all.
fn render() -> BTreeMap<String, String> {
    let dir = std::env::temp_dir().join(format!("tessera-ts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // JSON numbers: amounts are integer cents far inside 2^53.
    let cfg = Config::new().with_out_dir(&dir).with_large_int("number");
    let exports: [Export; 9] = [
        DayReport::export_all,
        LeaseInfo::export_all,
        Revoked::export_all,
        Role::export_all,
        StaffRole::export_all,
        PaymentMethod::export_all,
        CartLine::export_all,
        PricedLine::export_all,
        VatSplit::export_all,
    ];
    for export in exports {
        export(&cfg).expect("render TypeScript");
    }
    let mut files = read(&dir);
    std::fs::remove_dir_all(&dir).expect("remove the rendering directory");
    let mut index = String::from(
        "// Generated from the Rust wire types (crates/core/tests/ts_bindings.rs). Do not edit.\n",
    );
    for name in files.keys() {
        let module = name.trim_end_matches(".ts");
        index.push_str(&format!(
            "export type {{ {module} }} from \"./{module}\";\n"
        ));
    }
    files.insert("index.ts".into(), index);
    files
}

fn read(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ts"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).expect("read a generated file"),
            )
        })
        .collect()
}

#[test]
fn the_ui_types_are_what_the_rust_types_render() {
    let fresh = render();
    let dir = checked_in();
    if std::env::var_os("TESSERA_WRITE_TS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create ui/src/generated");
        for (name, text) in &fresh {
            std::fs::write(dir.join(name), text).expect("write a generated file");
        }
        return;
    }
    let old = read(&dir);
    let stale: std::collections::BTreeSet<&String> = fresh
        .keys()
        .chain(old.keys())
        .filter(|name| fresh.get(*name) != old.get(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "ui/src/generated is stale ({stale:?} differ from the Rust types); regenerate with\n  \
         TESSERA_WRITE_TS=1 cargo test -p tessera-core --test ts_bindings"
    );
}
