//! The keys a record's completion is stored under, in every store. Business ids and record
//! coordinates live in separate namespaces, so that no business id can ever name another record:
//!
//! | key | for |
//! |---|---|
//! | `id:<business id>` | a record whose handler names a business id ([`crate::handler::RecordHandler::idempotency_key`]) |
//! | `at:<topic>/<partition>/<offset>` | any other record, and every poison record that has an offset |
//! | `raw:<topic>/<partition>/<hash>` | an undecodable ESM record without an offset: `<hash>` is the 64-bit FNV-1a hash of its raw JSON, 16 hex digits |
//!
//! The hash is specified (FNV-1a, 64 bits), not Rust's `DefaultHasher`, whose output may change
//! between Rust releases: a persisted key must mean the same thing after an upgrade.

/// The key of a record named by its handler's business id.
pub fn business_key(id: &str) -> String {
    // Built by hand: one allocation of the right size, no formatting machinery (once per record).
    let mut key = String::with_capacity(3 + id.len());
    key.push_str("id:");
    key.push_str(id);
    key
}

/// The key of a record without a business id: where it was read.
pub fn coordinates_key(topic: &str, partition: i32, offset: i64) -> String {
    format!("at:{topic}/{partition}/{offset}")
}

/// The key of an undecodable record that has no offset: its partition and its raw JSON's hash.
pub fn raw_record_key(topic: &str, partition: i32, raw_json: &str) -> String {
    format!(
        "raw:{topic}/{partition}/{:016x}",
        fnv1a_64(raw_json.as_bytes())
    )
}

/// FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespaces_never_meet() {
        // A business id spelled like another record's coordinates is still a business id.
        assert_ne!(business_key("t/0/5"), coordinates_key("t", 0, 5));
        assert_eq!(business_key("t/0/5"), "id:t/0/5");
        assert_eq!(coordinates_key("a.b-c", 3, 42), "at:a.b-c/3/42");
        assert_ne!(business_key("at:t/0/5"), coordinates_key("t", 0, 5));
    }

    #[test]
    fn the_raw_hash_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(raw_record_key("t", 1, "foobar"), "raw:t/1/85944171f73967e8");
    }
}
