//! Compatibility with `aws_lambda_events`' `KafkaEvent`: what our encoder writes (the shape `esm poll`
//! sends) is what the standard type reads; and the traps of that type that our decoder handles are
//! pinned here, so a dependency update that changes them is noticed. Measured on 1.2.x:
//! - `KafkaRecord.headers` is required: an event without `headers` fails the whole batch;
//! - header bytes are `i8`: an unsigned byte such as 200 fails the whole batch;
//! - `timestamp` goes through `f64`: milliseconds may come out one off.
//!
//! One bad record must never fail a whole batch, so `decode_event` reads each record on its own.

use aws_lambda_events::event::kafka::KafkaEvent;
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::event::decode_event;
use kafka_esm::record::{DecodedRecord, Header, KafkaRecord, TimestampType};

fn record() -> KafkaRecord {
    let mut r = KafkaRecord::new("orders.v1-eu", 2, 41);
    r.timestamp = Some(1_545_084_650_987);
    r.timestamp_type = Some(TimestampType::CreateTime);
    r.key = Some(b"k".to_vec());
    r.value = Some(b"{\"n\":1}".to_vec());
    r.headers = vec![Header::new("trace", vec![0x80, 0x01, 0xff])];
    r
}

#[test]
fn the_standard_type_reads_what_we_write() {
    let arn = "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc".to_owned();
    let json = encode_event(
        &Source::Msk {
            cluster_arn: arn.clone(),
        },
        "b-1:9098",
        &[record()],
    );
    let event: KafkaEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(event.event_source.as_deref(), Some("aws:kafka"));
    assert_eq!(event.event_source_arn.as_deref(), Some(arn.as_str()));
    let records = &event.records["orders.v1-eu-2"];
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic.as_deref(), Some("orders.v1-eu"));
    assert_eq!(records[0].offset, 41);
    assert_eq!(records[0].key.as_deref(), Some("aw=="));
    assert_eq!(records[0].headers[0]["trace"], vec![-128i8, 1, -1]);
}

#[test]
fn events_the_standard_type_rejects_whole_are_decoded_record_by_record() {
    let valid = encode_event(&Source::SelfManaged, "localhost:9092", &[record()]);
    // No `headers` (older events) and an unsigned header byte: the standard type fails the whole batch.
    let without_headers = valid.replace(r#","headers":[{"trace":[-128,1,-1]}]"#, "");
    let unsigned_byte = valid.replace("[-128,1,-1]", "[200,1,255]");
    for json in [without_headers, unsigned_byte] {
        assert!(serde_json::from_str::<KafkaEvent>(&json).is_err(), "{json}");
        let batch = decode_event(&json).unwrap();
        let DecodedRecord::Record(r) = &batch.partitions[0].records[0] else {
            panic!("decoded as poison: {json}")
        };
        assert_eq!(r.timestamp, Some(1_545_084_650_987), "milliseconds exact");
    }
}
