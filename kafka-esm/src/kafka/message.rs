//! Consumed Kafka messages as [`KafkaRecord`]s: what the ESM would have put in its event.

use rdkafka::message::{Headers, Message, Timestamp};

use crate::record::{Header, KafkaRecord, TimestampType};

/// The record a consumed Kafka message holds: coordinates, timestamp and its type, key, value and
/// headers in order (null header values kept).
pub fn record_from_message<M: Message>(message: &M) -> KafkaRecord {
    let mut record = KafkaRecord::new(message.topic(), message.partition(), message.offset());
    match message.timestamp() {
        Timestamp::CreateTime(ms) => {
            record.timestamp = Some(ms);
            record.timestamp_type = Some(TimestampType::CreateTime);
        }
        Timestamp::LogAppendTime(ms) => {
            record.timestamp = Some(ms);
            record.timestamp_type = Some(TimestampType::LogAppendTime);
        }
        Timestamp::NotAvailable => {}
    }
    record.key = message.key().map(<[u8]>::to_vec);
    record.value = message.payload().map(<[u8]>::to_vec);
    if let Some(headers) = message.headers() {
        record.headers = headers
            .iter()
            .map(|h| Header {
                name: h.key.to_owned(),
                value: h.value.map(<[u8]>::to_vec),
            })
            .collect();
    }
    record
}
