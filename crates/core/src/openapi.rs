//! OpenAPI schemas for the wire types whose JSON is not their Rust shape:
//! they serialize through a string (`SlotId`, `Currency`) or are CRDT state
//! (`Tallies`). Everything else derives `utoipa::ToSchema` beside its type.

use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::money::Currency;
use crate::slot::SlotId;
use crate::tally::Tallies;

impl PartialSchema for SlotId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A slot: its local date and the start of its entry window (museum time zone).",
            ))
            .pattern(Some(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$"))
            .examples(["2026-12-02T10:00"])
            .into()
    }
}

impl ToSchema for SlotId {}

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("ISO 4217 currency code."))
            .pattern(Some("^[A-Z]{3}$"))
            .examples(["EUR"])
            .into()
    }
}

impl ToSchema for Currency {}

impl PartialSchema for Tallies {
    fn schema() -> RefOr<Schema> {
        // Per slot id, the CRDT state of the sold and voided counters (one
        // grow-only counter per actor); clients merge it, never edit it.
        let counter: Object = ObjectBuilder::new().schema_type(Type::Object).build();
        let slot = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("sold", counter.clone())
            .property("voided", counter)
            .required("sold")
            .required("voided");
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Live sales tallies per slot id: grow-only counters per actor (crdts GCounter).",
            ))
            .additional_properties(Some(slot))
            .into()
    }
}

impl ToSchema for Tallies {}
