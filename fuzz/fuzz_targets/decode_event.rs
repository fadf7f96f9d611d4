//! `decode_event` on arbitrary bytes: it must never panic, and a batch it accepts must survive being
//! written back (`encode_decoded_event`, as `esm redrive` does) and read again with every slot.
#![no_main]

use kafka_esm::encode::{Source, encode_decoded_event};
use kafka_esm::event::decode_event;
use kafka_esm::record::DecodedRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(batch) = decode_event(text) else {
        return;
    };
    let slots: Vec<DecodedRecord> = batch
        .partitions
        .iter()
        .flat_map(|p| p.records.iter().cloned())
        .collect();
    let again = encode_decoded_event(&Source::SelfManaged, "b:9092", &slots);
    let decoded = decode_event(&again).expect("a re-encoded batch decodes");
    assert_eq!(decoded.record_count(), slots.len(), "{again}");
});
