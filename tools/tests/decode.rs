//! `esm decode` end to end: the binary on Powertools' published sample events (the values their
//! own tests assert), and on Confluent- and Glue-framed Avro and Protobuf records built here with
//! apache-avro and prost (no public sample of such records was found; the framing is the one the
//! library's format tests write), read with schemas from a schema directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use kafka_esm::encode::{Source, encode_event};
use kafka_esm::record::KafkaRecord;
use serde_json::{Value, json};

const GLUE_ID: &str = "7d55d475-2244-4485-8341-f74468c1e058";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Runs `esm decode ARGS`: the JSON lines on stdout and the exit code.
fn decode(args: &[&str]) -> (Vec<Value>, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_esm"))
        .arg("decode")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (lines, out.status.code().unwrap())
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Powertools for AWS Lambda (TypeScript), packages/kafka/tests/events/avro.json, read with its
/// tests' `Product` schema (events/schemas/product.avsc): consumer.test.ts asserts the first
/// value {id: 1001, name: "Laptop", price: 999.99} and the key 42.
#[test]
fn powertools_typescript_avro_event() {
    let event = repo("events/schema-registry/powertools-typescript/avro.json");
    let schema = repo("events/schemas/product.avsc");
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "avro",
        "--value-schema",
        path_str(&schema),
        "--key-format",
        "json",
    ]);
    assert_eq!(code, 0, "{lines:?}");
    let values: Vec<&Value> = lines.iter().map(|l| &l["value"]).collect();
    assert_eq!(
        values,
        [
            &json!({"id": 1001, "name": "Laptop", "price": 999.99}),
            &json!({"id": 1002, "name": "Smartphone", "price": 599.99}),
            &json!({"id": 1003, "name": "Headphones", "price": 149.99}),
        ]
    );
    assert_eq!(lines[0]["key"], 42);
    assert_eq!(lines[2]["key"], Value::Null);
    assert_eq!(
        (
            &lines[0]["topic"],
            &lines[0]["partition"],
            &lines[0]["offset"]
        ),
        (&json!("mytopic"), &json!(0), &json!(15))
    );
    assert_eq!(lines[0]["headers"], json!([{"headerKey": "headerValue"}]));
    assert_eq!(lines[0]["schema"]["key"], Value::Null);
    assert_eq!(lines[0]["schema"]["value"]["kind"], "avro");
    assert_eq!(lines[0]["schema"]["value"]["id"], Value::Null);
    assert!(lines.iter().all(|l| l.get("error").is_none()));
}

/// Without a key format the key is its text ("42"); with --json, one document per file.
#[test]
fn raw_keys_and_one_document_per_file() {
    let event = repo("events/schema-registry/powertools-typescript/avro.json");
    let schema = repo("events/schemas/product.avsc");
    let (docs, code) = decode(&[
        path_str(&event),
        "--json",
        "--value-format",
        "avro",
        "--value-schema",
        path_str(&schema),
    ]);
    assert_eq!(code, 0);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["failed"], 0);
    assert_eq!(docs[0]["records"][0]["key"], "42");
    assert_eq!(docs[0]["records"].as_array().unwrap().len(), 3);
}

/// Powertools for AWS Lambda (TypeScript), packages/kafka/tests/events/protobuf.json with
/// protos/product.proto: consumer.test.ts asserts the first record is {id: 1001, name: "Laptop",
/// price: 999.99}. The second and third records as shipped name a schema id but carry no message
/// index (see events/schema-registry/README.md): no Powertools test asserts them as shipped.
#[test]
fn powertools_typescript_protobuf_event() {
    let event = repo("events/schema-registry/powertools-typescript/protobuf.json");
    let proto = repo("events/schema-registry/powertools-typescript/protos/product.proto");
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "protobuf",
        "--value-schema",
        path_str(&proto),
        "--value-message",
        "Product",
        "--key-format",
        "json",
    ]);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["value"],
        json!({"id": 1001, "name": "Laptop", "price": 999.99})
    );
    assert_eq!(lines[0]["key"], 42);
    assert!(lines[0].get("error").is_none(), "{}", lines[0]);
    // As shipped, the other two name a schema (a Glue UUID, a Confluent "2") whose message index
    // is missing: the first body byte is read as the index, and the rest is not a Product.
    assert_eq!(code, 1);
    for line in &lines[1..] {
        assert!(line["error"].is_string(), "{line}");
    }
}

/// Powertools for AWS Lambda (TypeScript), protobuf-complex.confluent.json: captured from the ESM
/// in SOURCE shape (schemaId "1"), each value starting with the message-index list [1]
/// (UserProfile). consumer.test.ts checks each is a user profile; complex.proto is schema 1 here.
#[test]
fn powertools_typescript_protobuf_complex_confluent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("events/schema-registry/powertools-typescript/protos/complex.proto"),
        dir.path().join("1.proto"),
    )
    .unwrap();
    let event =
        repo("events/schema-registry/powertools-typescript/protobuf-complex.confluent.json");
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "protobuf",
        "--schema-dir",
        path_str(dir.path()),
    ]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0]["value"],
        json!({
            "userId": "a8e40971-1552-420d-a7c9-b8982325702d", "name": "Bob",
            "email": "bob@example.com", "age": 28, "isActive": true, "signupDate": "2024-02-02",
            "tags": ["tag1", "tag2"], "preferences": {"theme": "light"},
            "address": {"street": "123 Ave", "city": "Seattle", "zip": "98101"}
        })
    );
    for line in &lines {
        assert_eq!(line["value"]["name"], "Bob");
        assert_eq!(line["value"]["address"]["city"], "Seattle");
        assert_eq!(
            line["schema"]["value"],
            json!({"kind": "protobuf", "id": "1"})
        );
    }
}

const PRODUCT_AVSC: &str = r#"{"type":"record","name":"Product","fields":[
    {"name":"id","type":"int"},{"name":"name","type":"string"},{"name":"price","type":"double"}]}"#;

fn avro_product(id: i32, name: &str, price: f64) -> Vec<u8> {
    use apache_avro::types::Value as Avro;
    let schema = apache_avro::Schema::parse_str(PRODUCT_AVSC).unwrap();
    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(Avro::Record(vec![
            ("id".into(), Avro::Int(id)),
            ("name".into(), Avro::String(name.into())),
            ("price".into(), Avro::Double(price)),
        ]))
        .unwrap()
}

fn confluent(id: u32, rest: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&id.to_be_bytes());
    framed.extend_from_slice(rest);
    framed
}

fn glue(rest: &[u8]) -> Vec<u8> {
    let mut framed = vec![3, 0];
    framed.extend_from_slice(uuid::Uuid::parse_str(GLUE_ID).unwrap().as_bytes());
    framed.extend_from_slice(rest);
    framed
}

/// An ESM event file (self-managed, no schema metadata: framed bytes as the producer wrote them)
/// of these values, offsets 0.., in `dir`.
fn event_file(dir: &Path, values: Vec<Vec<u8>>) -> PathBuf {
    let records: Vec<KafkaRecord> = values
        .into_iter()
        .enumerate()
        .map(|(offset, value)| {
            let mut r = KafkaRecord::new("products", 0, offset as i64);
            r.key = Some(vec![0xff, 0xfe]);
            r.value = Some(value);
            r
        })
        .collect();
    let path = dir.join("event.json");
    std::fs::write(
        &path,
        encode_event(&Source::SelfManaged, "localhost:9092", &records),
    )
    .unwrap();
    path
}

#[test]
fn confluent_and_glue_framed_avro() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("7.avsc"), PRODUCT_AVSC).unwrap();
    std::fs::write(dir.path().join(format!("{GLUE_ID}.avsc")), PRODUCT_AVSC).unwrap();
    let event = event_file(
        dir.path(),
        vec![
            confluent(7, &avro_product(1001, "Laptop", 999.99)),
            glue(&avro_product(1002, "Smartphone", 599.99)),
        ],
    );
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "avro",
        "--schema-dir",
        path_str(dir.path()),
    ]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines[0]["value"],
        json!({"id": 1001, "name": "Laptop", "price": 999.99})
    );
    assert_eq!(
        lines[0]["schema"]["value"],
        json!({"kind": "avro", "id": "7"})
    );
    assert_eq!(
        lines[1]["value"],
        json!({"id": 1002, "name": "Smartphone", "price": 599.99})
    );
    assert_eq!(
        lines[1]["schema"]["value"],
        json!({"kind": "avro", "id": GLUE_ID})
    );
    // A key that is not UTF-8, read with no format: base64, and said so.
    assert_eq!(lines[0]["key"], json!({"base64": "//4="}));
    // --wire-format confluent refuses the Glue-framed record.
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "avro",
        "--schema-dir",
        path_str(dir.path()),
        "--wire-format",
        "confluent",
    ]);
    assert_eq!(code, 1);
    assert!(lines[0].get("error").is_none());
    assert!(lines[1]["error"].is_string(), "{}", lines[1]);
}

/// Event.Created and Event.Deleted nested in the second message of the file: Confluent's index
/// path [1, 0] / [1, 1]; Glue's index among all messages sorted by full name (demo.Envelope,
/// demo.Event, demo.Event.Created, demo.Event.Deleted).
const NESTED_PROTO: &str = r#"syntax = "proto3";
package demo;
message Envelope { string note = 1; }
message Event {
  message Created { string by = 1; int64 at = 2; }
  message Deleted { string by = 1; }
  string id = 1;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct Created {
    #[prost(string, tag = "1")]
    by: String,
    #[prost(int64, tag = "2")]
    at: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(string, tag = "1")]
    note: String,
}

#[test]
fn confluent_and_glue_framed_protobuf_with_message_indexes() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("8.proto"), NESTED_PROTO).unwrap();
    std::fs::write(dir.path().join(format!("{GLUE_ID}.proto")), NESTED_PROTO).unwrap();
    let created = Created {
        by: "ops".into(),
        at: 1_750_358_101_849,
    }
    .encode_to_vec();
    let envelope = Envelope {
        note: "hello".into(),
    }
    .encode_to_vec();
    let with = |prefix: &[u8], body: &[u8]| [prefix, body].concat();
    let event = event_file(
        dir.path(),
        vec![
            // Confluent [1, 0]: zigzag varints 04 02 00.
            confluent(8, &with(&[4, 2, 0], &created)),
            // Confluent [0]: the single 00.
            confluent(8, &with(&[0], &envelope)),
            // Confluent [1, 1]: Event.Deleted (field 1 is `by` there too).
            confluent(8, &with(&[4, 2, 2], &created)),
            // Glue index 2: demo.Event.Created.
            glue(&with(&[2], &created)),
            // Glue index 0: demo.Envelope.
            glue(&with(&[0], &envelope)),
        ],
    );
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "protobuf",
        "--schema-dir",
        path_str(dir.path()),
    ]);
    assert_eq!(code, 0, "{lines:?}");
    let created_json = json!({"by": "ops", "at": "1750358101849"});
    let values: Vec<&Value> = lines.iter().map(|l| &l["value"]).collect();
    assert_eq!(
        values,
        [
            &created_json,
            &json!({"note": "hello"}),
            &json!({"by": "ops"}),
            &created_json,
            &json!({"note": "hello"}),
        ]
    );
    assert_eq!(
        lines[0]["schema"]["value"],
        json!({"kind": "protobuf", "id": "8"})
    );
    assert_eq!(
        lines[3]["schema"]["value"],
        json!({"kind": "protobuf", "id": GLUE_ID})
    );
}

/// A record that does not decode gets a line with `error`, the others still decode, the exit
/// code is 1: an unknown schema id, a body that is not Avro of its schema, a plain value with no
/// schema to read it with.
#[test]
fn undecodable_records_give_error_lines_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("7.avsc"), PRODUCT_AVSC).unwrap();
    let event = event_file(
        dir.path(),
        vec![
            confluent(7, &avro_product(1001, "Laptop", 999.99)),
            confluent(99, &avro_product(1001, "Laptop", 999.99)),
            confluent(7, &[0xd2, 0x0f, 0x0c, b'L']),
            b"not avro".to_vec(),
        ],
    );
    let (lines, code) = decode(&[
        path_str(&event),
        "--value-format",
        "avro",
        "--schema-dir",
        path_str(dir.path()),
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 4);
    assert!(lines[0].get("error").is_none(), "{}", lines[0]);
    for line in &lines[1..] {
        let error = line["error"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(error.starts_with("value: "), "{error}");
        assert_eq!(line["topic"], "products");
    }
    assert!(
        lines[1]["error"].as_str().unwrap().contains("99"),
        "{}",
        lines[1]
    );
    // The part that failed is shown raw.
    assert_eq!(lines[3]["value"], "not avro");
    // The default value format, JSON, on the same file: every record is an error, none aborts.
    let (lines, code) = decode(&[path_str(&event)]);
    assert_eq!((lines.len(), code), (4, 1));
    assert!(lines.iter().all(|l| l["error"].is_string()));
}

#[test]
fn options_that_cannot_be_used_exit_2() {
    let event = repo("events/schema-registry/powertools-typescript/avro.json");
    let (_, code) = decode(&[path_str(&event), "--value-format", "avro"]);
    assert_eq!(code, 2);
    let (_, code) = decode(&[
        path_str(&event),
        "--value-format",
        "protobuf",
        "--value-schema",
        path_str(&repo(
            "events/schema-registry/powertools-typescript/protos/product.proto",
        )),
    ]);
    assert_eq!(code, 2);
}
