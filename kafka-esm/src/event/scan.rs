//! The first way an event is read: the JSON as the ESM writes it, read by hand in one pass.
//!
//! The ESM's JSON has one shape, and most of it is strings that need no escape and small integers
//! (a header value is an array of byte numbers: two 16-byte headers make 32 numbers per record).
//! Read here, each number costs a few instructions instead of a trip through serde for each.
//!
//! A value in an unusual form (a string with escapes, a number written as a float or a string,
//! headers with spaces, a field this reader does not know) is read by serde where it stands, as
//! the record's own serde types read it. Anything that is not a well-formed event with records
//! that all decode (a duplicate field, a record that does not decode, text that is not JSON) makes
//! this reader give up (`None`): the event then goes the tolerant way ([`super::decode_event`]),
//! which decodes each record on its own and names what is wrong. What this reader accepts, it
//! decodes to exactly what the tolerant way would: a property test holds the two equal on
//! generated events.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Batch, LenientInt, RawHeaders, RawRecord, Str, finish, partition_batch};
use crate::record::{DecodedRecord, Header, SchemaMetadata};

/// The event decoded, or `None` when it is not in the plain form this reader knows.
pub(super) fn scan_event(json: &str) -> Option<Batch> {
    let mut scanner = Scanner {
        text: json,
        bytes: json.as_bytes(),
        at: 0,
    };
    let event = scanner.envelope()?;
    scanner.skip_whitespace();
    (scanner.at == json.len()).then_some(event)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn envelope(&mut self) -> Option<Batch> {
        let (mut source, mut arn, mut servers, mut partitions) = (None, None, None, None);
        self.object(|s, name| match name {
            "eventSource" => once(&mut source, s.nullable_string()?),
            "eventSourceArn" => once(&mut arn, s.nullable_string()?),
            "bootstrapServers" => once(&mut servers, s.nullable_string()?),
            "records" => once(&mut partitions, s.partitions()?),
            _ => s.serde::<IgnoredAny>().map(drop),
        })?;
        // No `records` (or `null`): not an event this pass decodes.
        Some(finish(
            source.flatten(),
            arn.flatten(),
            servers.flatten(),
            partitions?,
        ))
    }

    /// The `records` object: each partition's array, in the order written.
    fn partitions(&mut self) -> Option<Vec<super::PartitionBatch>> {
        let mut partitions = Vec::with_capacity(4);
        self.object(|s, key| {
            let records = s.records(key)?;
            partitions.push(partition_batch(key.to_owned(), records));
            Some(())
        })?;
        Some(partitions)
    }

    fn records(&mut self, key: &str) -> Option<Vec<DecodedRecord>> {
        self.open(b'[')?;
        let mut records = Vec::with_capacity(64);
        let mut more = !self.close(b']');
        while more {
            let record = self.record()?.into_record(key).ok()?;
            records.push(DecodedRecord::Record(record));
            more = self.separator(b']')?;
        }
        Some(records)
    }

    fn record(&mut self) -> Option<RawRecord<'a>> {
        let mut topic = None;
        let mut partition = None;
        let mut offset = None;
        let mut timestamp = None;
        let mut timestamp_type = None;
        let mut key = None;
        let mut value = None;
        let mut headers = None;
        let mut key_schema = None;
        let mut value_schema = None;
        self.object(|s, name| match name {
            "topic" => once(&mut topic, s.nullable_string()?),
            "partition" => once(&mut partition, s.integer()?),
            "offset" => once(&mut offset, s.integer()?),
            "timestamp" => once(&mut timestamp, s.integer()?),
            "timestampType" => once(&mut timestamp_type, s.nullable_string()?),
            "key" => once(&mut key, s.nullable_string()?),
            "value" => once(&mut value, s.nullable_string()?),
            "headers" => once(&mut headers, s.headers()?),
            "keySchemaMetadata" => once(&mut key_schema, s.serde::<Option<SchemaMetadata>>()?),
            "valueSchemaMetadata" => once(&mut value_schema, s.serde::<Option<SchemaMetadata>>()?),
            _ => s.serde::<IgnoredAny>().map(drop),
        })?;
        Some(RawRecord {
            topic: topic.flatten(),
            partition: partition.flatten(),
            offset: offset.flatten(),
            timestamp: timestamp.flatten(),
            timestamp_type: timestamp_type.flatten(),
            key: key.flatten(),
            value: value.flatten(),
            headers: headers.flatten(),
            key_schema: key_schema.flatten(),
            value_schema: value_schema.flatten(),
        })
    }

    /// An object: `member` reads each member's value, given its name (unescaped). Always inlined:
    /// left to the compiler, `decode_only` measured 4–8% slower.
    #[inline(always)]
    fn object(&mut self, mut member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.open(b'{')?;
        let mut more = !self.close(b'}');
        while more {
            let name = self.string()?;
            self.colon()?;
            member(self, &name.0)?;
            more = self.separator(b'}')?;
        }
        Some(())
    }

    /// A string or `null`.
    fn nullable_string(&mut self) -> Option<Option<Str<'a>>> {
        self.skip_whitespace();
        match self.bytes.get(self.at)? {
            b'"' => self.string().map(Some),
            b'n' => self.null(),
            _ => None,
        }
    }

    /// A string without escapes, borrowed; one with escapes is read by serde.
    fn string(&mut self) -> Option<Str<'a>> {
        self.skip_whitespace();
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let end = start + special_byte(&self.bytes[start..])?;
        match self.bytes[end] {
            b'"' => {
                self.at = end + 1;
                // Both ends are ASCII, so the slice is whole UTF-8.
                Some(Str(Cow::Borrowed(self.text.get(start..end)?)))
            }
            b'\\' => self.serde::<Str<'a>>(),
            // A control character: not JSON.
            _ => None,
        }
    }

    /// An integer as `LenientInt` reads it, or `null`: plain digits here, any other form by serde.
    fn integer(&mut self) -> Option<Option<i64>> {
        self.skip_whitespace();
        let start = self.at;
        let negative = self.bytes.get(start) == Some(&b'-');
        let digits_start = start + usize::from(negative);
        let digits = self.bytes[digits_start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = digits_start + digits;
        let plain = (1..=18).contains(&digits)
            && (digits == 1 || self.bytes[digits_start] != b'0')
            && !matches!(self.bytes.get(end), Some(b'.' | b'e' | b'E'));
        if !plain {
            return self
                .serde::<Option<LenientInt>>()
                .map(|value| value.map(|v| v.0));
        }
        let magnitude = self.bytes[digits_start..end]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        self.at = end;
        Some(Some(if negative { -magnitude } else { magnitude }))
    }

    /// The headers array, or `null`: in the ESM's compact form here, any other by serde.
    fn headers(&mut self) -> Option<Option<RawHeaders>> {
        self.skip_whitespace();
        if let Some((headers, end)) = compact_headers(self.text, self.at) {
            self.at = end;
            return Some(Some(RawHeaders(headers)));
        }
        self.serde::<Option<RawHeaders>>()
    }

    fn null(&mut self) -> Option<Option<Str<'a>>> {
        if self.bytes[self.at..].starts_with(b"null") {
            self.at += 4;
            Some(None)
        } else {
            None
        }
    }

    /// One value read by serde where it stands.
    fn serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let mut values =
            serde_json::Deserializer::from_str(self.text.get(self.at..)?).into_iter::<T>();
        let value = values.next()?.ok()?;
        self.at += values.byte_offset();
        Some(value)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn open(&mut self, bracket: u8) -> Option<()> {
        self.skip_whitespace();
        (self.bytes.get(self.at) == Some(&bracket)).then(|| self.at += 1)
    }

    /// True (and consumed) when the closing bracket comes next: an empty object or array.
    fn close(&mut self, bracket: u8) -> bool {
        self.skip_whitespace();
        let closes = self.bytes.get(self.at) == Some(&bracket);
        self.at += usize::from(closes);
        closes
    }

    fn colon(&mut self) -> Option<()> {
        self.open(b':')
    }

    /// After a member: `Some(true)` for a comma, `Some(false)` for the closing bracket.
    fn separator(&mut self, bracket: u8) -> Option<bool> {
        self.skip_whitespace();
        let next = *self.bytes.get(self.at)?;
        self.at += 1;
        match next {
            b',' => Some(true),
            _ if next == bracket => Some(false),
            _ => None,
        }
    }
}

/// Sets a field read once; a field written twice fails (as serde's derive does).
fn once<T>(field: &mut Option<T>, value: T) -> Option<()> {
    match field {
        Some(_) => None,
        None => {
            *field = Some(value);
            Some(())
        }
    }
}

/// Where the first `"`, `\` or control character is: the end of a string, or where it needs more
/// than a slice.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    // The quote or backslash by SIMD search, then the bytes before it checked for a control
    // character (a minimum over the slice, which the compiler vectorizes).
    let end = memchr::memchr2(b'"', b'\\', bytes)?;
    let before = &bytes[..end];
    if before.iter().fold(u8::MAX, |least, &b| least.min(b)) >= 0x20 {
        return Some(end);
    }
    before.iter().position(|&b| b < 0x20)
}

/// The headers array at `at` in the ESM's compact form, `[{"name":[104,-1]},{"other":null}]` (no
/// whitespace, no escape in a name, each byte a plain integer within -128..255, negative ones as
/// Java's signed bytes), and where it ends. `None` for any other form, valid or not.
fn compact_headers(text: &str, mut at: usize) -> Option<(Vec<Header>, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    at += 1;
    let mut headers = Vec::with_capacity(2);
    if bytes.get(at) == Some(&b']') {
        return Some((headers, at + 1));
    }
    loop {
        // One object of the array: one or more `"name":value` members.
        let mut opening = b'{';
        loop {
            if bytes.get(at) != Some(&opening) || bytes.get(at + 1) != Some(&b'"') {
                return None;
            }
            let start = at + 2;
            let end = start + special_byte(&bytes[start..])?;
            if bytes[end] != b'"' || bytes.get(end + 1) != Some(&b':') {
                return None;
            }
            let name = text.get(start..end)?.to_owned();
            at = end + 2;
            let value = if bytes[at..].starts_with(b"null") {
                at += 4;
                None
            } else {
                let (value, after) = compact_bytes(bytes, at)?;
                at = after;
                Some(value)
            };
            headers.push(Header { name, value });
            match bytes.get(at) {
                Some(b',') => opening = b',',
                Some(b'}') => break,
                _ => return None,
            }
        }
        at += 1;
        match bytes.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return Some((headers, at + 1)),
            _ => return None,
        }
    }
}

/// `[1,-2,255]` at `at`: the bytes and where the array ends.
fn compact_bytes(bytes: &[u8], mut at: usize) -> Option<(Vec<u8>, usize)> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    at += 1;
    let mut value = Vec::new();
    if bytes.get(at) == Some(&b']') {
        return Some((value, at + 1));
    }
    // Bytes gather on the stack and go to the heap 32 at a time: one allocation for a usual
    // header value, no capacity check per byte.
    let mut gathered = [0u8; 32];
    let mut count = 0;
    let digit = |at: usize| {
        bytes
            .get(at)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
    };
    loop {
        let negative = bytes.get(at) == Some(&b'-');
        at += usize::from(negative);
        let first = digit(at)?;
        let mut magnitude = u16::from(first);
        at += 1;
        // No leading zero (JSON has none), at most three digits.
        if first != 0 {
            for _ in 0..2 {
                match digit(at) {
                    Some(d) => {
                        magnitude = magnitude * 10 + u16::from(d);
                        at += 1;
                    }
                    None => break,
                }
            }
        }
        let byte = match (negative, magnitude) {
            (false, 0..=255) => magnitude as u8,
            (true, 0..=128) => (magnitude as u8).wrapping_neg(),
            _ => return None,
        };
        if count == gathered.len() {
            value.extend_from_slice(&gathered);
            count = 0;
        }
        gathered[count] = byte;
        count += 1;
        match bytes.get(at) {
            Some(b',') => at += 1,
            Some(b']') => {
                value.extend_from_slice(&gathered[..count]);
                return Some((value, at + 1));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_tolerantly, encode_base64};

    /// One of `choices`, at random.
    fn pick<'c>(rng: &mut fastrand::Rng, choices: &[&'c str]) -> &'c str {
        choices[rng.usize(..choices.len())]
    }

    /// Text of a random ESM event: mostly as the ESM writes it, with every unusual form this reader
    /// hands to serde (escapes, lenient numbers, spaced or out-of-range headers, unknown and
    /// duplicate fields, bad base64, whitespace) and some that are not events at all.
    fn random_event(rng: &mut fastrand::Rng) -> String {
        let unusual = rng.u8(..4) == 0;
        let space = |rng: &mut fastrand::Rng| -> &'static str {
            if unusual {
                pick(rng, &["", "", " ", "\n  ", "\t"])
            } else {
                ""
            }
        };
        let mut members: Vec<String> = Vec::new();
        if rng.bool() {
            members.push(format!(
                "\"eventSource\":{}",
                pick(
                    rng,
                    &[
                        "\"aws:kafka\"",
                        "\"SelfManagedKafka\"",
                        "null",
                        "\"a\\u0062c\""
                    ]
                )
            ));
        }
        if rng.bool() {
            members.push("\"eventSourceArn\":\"arn:aws:kafka:us-east-1:1:cluster/c/1\"".into());
        }
        if unusual && rng.u8(..4) == 0 {
            members.push(format!(
                "\"{}\":{}",
                pick(rng, &["newField", "eventSource", "records"]),
                pick(rng, &["{\"x\":[1, 2]}", "null", "7", "\"s\""])
            ));
        }
        let mut partitions = Vec::new();
        for p in 0..rng.usize(0..4) {
            let topic = pick(rng, &["orders", "a-b.c", "t\\u00e9", "ünï"]);
            let mut records = Vec::new();
            for offset in 0..rng.usize(0..4) {
                records.push(random_record(rng, unusual, topic, p, offset));
            }
            let s = space(rng);
            partitions.push(format!(
                "\"{topic}-{p}\":{s}[{}]",
                records.join(&format!(",{s}"))
            ));
        }
        if !(unusual && rng.u8(..8) == 0) {
            members.push(format!("\"records\":{{{}}}", partitions.join(",")));
        }
        rng.shuffle(&mut members);
        let s = space(rng);
        let mut event = format!("{{{s}{}{s}}}", members.join(&format!(",{s}")));
        if unusual && rng.u8(..8) == 0 {
            event.push_str(pick(rng, &[" ", "\n", "x", "}"]));
        }
        event
    }

    fn random_record(
        rng: &mut fastrand::Rng,
        unusual: bool,
        topic: &str,
        partition: usize,
        offset: usize,
    ) -> String {
        let odd = |rng: &mut fastrand::Rng| unusual && rng.u8(..3) == 0;
        let mut fields: Vec<String> = Vec::new();
        let mut field = |rng: &mut fastrand::Rng, name: &str, plain: String, odd_forms: &[&str]| {
            if odd(rng) {
                let form = pick(rng, odd_forms);
                if form != "absent" {
                    fields.push(format!("\"{name}\":{form}"));
                }
            } else {
                fields.push(format!("\"{name}\":{plain}"));
            }
        };
        field(
            rng,
            "topic",
            format!("\"{topic}\""),
            &["absent", "null", "5", "\"t\\u0031\""],
        );
        field(
            rng,
            "partition",
            partition.to_string(),
            &["absent", "null", "\"2\"", "2.0", "-1", "99999999999", "0"],
        );
        field(
            rng,
            "offset",
            offset.to_string(),
            &[
                "absent",
                "null",
                "\"15\"",
                "1.5e1",
                "-0",
                "123456789012345678",
                "12345678901234567890",
                "01",
                "1.5",
                "-",
                "\" 7 \"",
            ],
        );
        field(
            rng,
            "timestamp",
            "1545084650987".into(),
            &["absent", "null", "1545084650987.0", "-5", "true"],
        );
        field(
            rng,
            "timestampType",
            "\"CREATE_TIME\"".into(),
            &["absent", "null", "\"LOG_APPEND_TIME\"", "\"other\""],
        );
        let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
        let base64 = encode_base64(&bytes);
        let escaped = base64.replace('/', "\\/");
        let odd_base64 = [
            "absent",
            "null",
            "\"not base64!\"",
            "\"QQ\"",
            escaped.as_str(),
            "\"a\u{1}b\"",
            "[1]",
        ];
        field(rng, "key", format!("\"{base64}\""), &odd_base64);
        field(rng, "value", format!("\"{base64}\""), &odd_base64);
        let headers = random_headers(rng, unusual);
        field(
            rng,
            "headers",
            headers,
            &["absent", "null", "[]", "[{}]", "{}", "[{\"h\":[300]}]"],
        );
        if odd(rng) {
            fields.push(format!(
                "\"{}\":{}",
                pick(rng, &["keySchemaMetadata", "valueSchemaMetadata"]),
                pick(
                    rng,
                    &[
                        "{\"dataFormat\":\"AVRO\",\"schemaId\":\"1\"}",
                        "null",
                        "{\"dataFormat\":5}",
                        "{}",
                    ]
                )
            ));
        }
        if odd(rng) {
            let name = pick(rng, &["somethingNew", "offset", "headers", "top\\u0069c"]);
            fields.push(format!(
                "\"{name}\":{}",
                pick(rng, &["1", "[1,{\"a\":null}]", "null"])
            ));
        }
        rng.shuffle(&mut fields);
        if odd(rng) && rng.bool() {
            return pick(rng, &["7", "null", "[]", "\"r\""]).to_owned();
        }
        let s = if unusual { pick(rng, &["", " "]) } else { "" };
        format!("{{{s}{}{s}}}", fields.join(&format!(",{s}")))
    }

    fn random_headers(rng: &mut fastrand::Rng, unusual: bool) -> String {
        let mut objects = Vec::new();
        for _ in 0..rng.usize(0..3) {
            let mut members = Vec::new();
            for _ in 0..if unusual { rng.usize(1..3) } else { 1 } {
                let name = pick(rng, &["trace-id", "content-type", "dup", "ü", "a\\\"b", ""]);
                let value = if unusual && rng.u8(..4) == 0 {
                    pick(
                        rng,
                        &[
                            "null",
                            "[]",
                            "[ 1, 2 ]",
                            "[1.0]",
                            "[-128,255]",
                            "[-0]",
                            "[256]",
                            "[-129]",
                            "[01]",
                            "[1e2]",
                        ],
                    )
                    .to_owned()
                } else {
                    let bytes: Vec<String> = (0..rng.usize(0..20))
                        .map(|_| {
                            if rng.bool() {
                                (rng.i16(-128..128)).to_string()
                            } else {
                                rng.u8(..).to_string()
                            }
                        })
                        .collect();
                    format!("[{}]", bytes.join(","))
                };
                members.push(format!("\"{name}\":{value}"));
            }
            objects.push(format!("{{{}}}", members.join(",")));
        }
        format!("[{}]", objects.join(","))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// What the hand reader accepts, it decodes exactly as the tolerant way does; and it accepts every
        /// event written as the ESM writes it (so the fast way is the one taken).
        #[test]
        fn the_hand_reader_decodes_as_the_tolerant_way_does(seed in proptest::num::u64::ANY) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let text = random_event(&mut rng);
            let by_hand = scan_event(&text);
            match (&by_hand, decode_tolerantly(&text)) {
                (Some(by_hand), Ok(tolerant)) => proptest::prop_assert_eq!(by_hand, &tolerant, "{}", text),
                (Some(by_hand), Err(error)) => proptest::prop_assert!(false, "the tolerant way refuses ({error}) what the hand reader read as {by_hand:?}: {text}"),
                (None, _) => {}
            }
        }

        /// Cut or damaged anywhere, an event never panics the hand reader, and whatever it still
        /// reads is what the tolerant way reads.
        #[test]
        fn a_damaged_event_is_refused_or_read_as_the_tolerant_way_reads_it(
            seed in proptest::num::u64::ANY,
            cut in proptest::num::usize::ANY,
            damage in proptest::sample::select(&["", "\"", ",", "}", "]", "-", "0", "\\", "\u{1}", "é"][..]),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let text = random_event(&mut rng);
            let mut at = cut % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let damaged = format!("{}{damage}{}", &text[..at], &text[at..]);
            for text in [&text[..at], damaged.as_str()] {
                if let Some(by_hand) = scan_event(text) {
                    proptest::prop_assert_eq!(Ok(by_hand), decode_tolerantly(text).map_err(|e| e.to_string()), "{}", text);
                }
            }
        }
    }

    #[test]
    fn events_as_the_esm_writes_them_are_read_by_hand() {
        let mut accepted = 0;
        for seed in 0..500 {
            let mut rng = fastrand::Rng::with_seed(seed);
            // Only the plain events: the generator's `unusual` flag comes first.
            let text = random_event(&mut rng);
            let plain = fastrand::Rng::with_seed(seed).u8(..4) != 0;
            if plain {
                assert!(scan_event(&text).is_some(), "{text}");
                accepted += 1;
            }
        }
        assert!(accepted > 300, "{accepted}");
    }

    #[test]
    fn the_sample_events_decode_by_hand_as_the_tolerant_way() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
        let mut read_by_hand = 0;
        let mut pending = vec![std::path::PathBuf::from(root)];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if let Some(by_hand) = scan_event(&text) {
                let tolerant = decode_tolerantly(&text).unwrap();
                assert_eq!(by_hand, tolerant, "{}", path.display());
                read_by_hand += 1;
            }
        }
        // The ESM events among them (the AWS guide's, pretty-printed, included) are read by hand.
        assert!(read_by_hand >= 8, "{read_by_hand}");
    }

    #[test]
    fn header_bytes_read_by_hand_are_java_bytes() {
        let (headers, end) = compact_headers(
            r#"[{"a":[-128,-1,0,-0,127,128,255]},{"b":null,"c":[]}]x"#,
            0,
        )
        .unwrap();
        assert_eq!(end, 52);
        assert_eq!(
            headers[0].value.as_deref(),
            Some(&[128, 255, 0, 0, 127, 128, 255][..])
        );
        assert_eq!(
            (headers[1].name.as_str(), headers[1].value.as_deref()),
            ("b", None)
        );
        assert_eq!(headers[2].value.as_deref(), Some(&[][..]));
        for other in [
            "[{\"a\":[256]}]",
            "[{\"a\":[-129]}]",
            "[{\"a\":[01]}]",
            "[{\"a\": [1]}]",
            "[{\"a\\n\":[1]}]",
            "[{}]",
            "[{\"a\":[1.0]}]",
        ] {
            assert!(compact_headers(other, 0).is_none(), "{other}");
        }
    }
}
