//! The I/O-bound path: what an invocation costs when its store and its broker are a network away.
//!
//! The telemetry consumer (`telemetry_consumer`, as the Lambda wires it) handles generated ESM events
//! with the real [`DynamoDbStore`] (against moto) and the real [`KafkaSink`] (against rdkafka's
//! in-process `MockCluster`), with a fixed latency added to both:
//!
//! - DynamoDB: a TCP proxy inside the bench sits between the SDK and moto and holds every
//!   client-to-server chunk for the latency before forwarding it (answers go back at once), so each
//!   request costs one latency more. It follows the HTTP/1.1 framing of each connection, names each
//!   request by its `X-Amz-Target` operation (`BatchGetItem`, `PutItem`, `TransactWriteItems`, ...)
//!   and keeps its body. Opening a connection costs no added latency (moto answers `Connection:
//!   close`, so the SDK opens one per request; DynamoDB keeps them open).
//!   The proxy's count is checked against the store's own (`DynamoDbStore::requests`).
//! - Kafka: the mock broker's round-trip time (`MockCluster::broker_round_trip_time`), the same
//!   latency unless told otherwise. Produce requests are counted with librdkafka's mock request
//!   tracking (`rd_kafka_mock_start_request_tracking`, through `rdkafka::bindings`); the sink is
//!   wrapped in a forwarding `MessageSink` that notes when each message is sent and when its
//!   acknowledgement is awaited to the end.
//!
//! Events: 1,000 records (`1k`) and 6 MB (`6MB`, about 9,200 records), 4 partitions, 1% poison, from
//! `kafka_esm_telemetry::generate`. Each is handled `fresh` (a new table: every key new) and then `replayed`
//! (the same event again: every record a duplicate), on two paths:
//!
//! - `today`: one claim and one completion request per record, one acknowledgement wait per message.
//!   The store is wrapped in a newtype that implements only the single-key methods, so the trait's
//!   default per-key `try_claim_many` / `complete_many` / `release_many` run, and
//!   `ProcessorSettings::pipeline_publishes` is off.
//! - `batched`: the store as the Lambda configures it by default (`IDEMPOTENCY_CLAIMS=transaction`:
//!   one `TransactWriteItems` per chunk of claims, `BatchWriteItem` completions) and pipelined
//!   publishes (one acknowledgement wait per chunk).
//! - `puts` (asked for with `IO_BENCH_PATHS`): as `batched`, with `IDEMPOTENCY_CLAIMS=puts` (one
//!   conditional `PutItem` per claim, up to 100 in flight).
//!
//! Per case: the median wall time of the runs (min–max), records/s, DynamoDB requests per 100
//! records and per chunk (by operation), store round trips in sequence per chunk, Kafka produce
//! requests and acknowledgement waits in sequence per chunk; then one JSON line per case
//! (`{"bench":"io",...}`) and the goals. A chunk is up to 100 records of one partition
//! (`processor::READ_AHEAD`); the partitions run concurrently, a partition's chunks one after the
//! other. "In sequence" is counted per partition: every request (message) is attributed to the
//! partition of the record whose key it carries, and a partition's requests are cut into waves, a
//! new wave starting with the first request sent after an answer of the current wave came back
//! (requests sent together, such as a chunk's `BatchWriteItem`s, are one wave); waves of all
//! partitions ÷ chunks of all partitions. moto is slow (Python: 5–50 ms a request of its own, more
//! for large batches, one request at a time), so the table also gives the store's own time on the
//! critical path (`server ms`: the time a partition had a request in flight less one latency per
//! wave, the mean over partitions) and the wall time without it: an estimate of the same run with a
//! server that answers at once.
//!
//! Run (moto must be up; the bench says how to start it when it is not):
//!
//! ```text
//! bash infra/bench-io.sh
//! ```
//!
//! which runs `cargo bench --bench io` against a moto of its own whose transactions do not copy the
//! whole table (see the script: moto 5.2 copies it for each item of a transaction, which makes
//! batched claims cost seconds and grow with the table). Against the shared moto as it is:
//!
//! ```text
//! bash infra/local-stack.sh start && eval "$(bash infra/local-stack.sh env)" && cargo bench --bench io
//! ```
//!
//! where the bench measures how slow moto's transactions are first and, when they are, runs the
//! batched path once on the 1k event only.
//!
//! Settings (environment): `IO_BENCH_LATENCY_MS` (default 5) added to every DynamoDB request,
//! `IO_BENCH_KAFKA_RTT_MS` (default: the same) for the broker, `IO_BENCH_RUNS` (default 3) runs per
//! case, `IO_BENCH_TODAY_RUNS` (default 1: today's path on the 6 MB event costs more than a minute
//! against moto), `IO_BENCH_EVENTS` (default `1k,6MB`), `IO_BENCH_PATHS` (default
//! `today,batched`; also `puts`), `IO_BENCH_INVOCATION_TIMEOUT_S` (default 300: the Lambda deadline of each
//! invocation), `IO_BENCH_FORCE_SLOW_MOTO=1` (run every case even when moto's transactions are
//! slow). With the defaults at 5 ms: 2½–4 minutes on the project's 2-core machine, depending on its
//! load, nearly all of it moto's own time (today's path on the 6 MB event alone: 60–100 s).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Region};
use futures::FutureExt;
use kafka_esm::event::decode_event;
use kafka_esm::handler::{InvocationInfo, RecordHandler};
use kafka_esm::idempotency::keys::{business_key, coordinates_key};
use kafka_esm::idempotency::{ClaimMode, CompletedOutcome, DynamoDbStore, IdempotencyStore};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::processor::{COMPLETION_BATCH, Counts, READ_AHEAD};
use kafka_esm::record::DecodedRecord;
use kafka_esm::retry::Deadline;
use kafka_esm::sink::{
    Delivery, KafkaSink, MessageSink, OutboundMessage, PendingAck, PublishWindow, SinkError,
};
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_telemetry::generate::{GenerateOptions, generate_event};
use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaApiKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/one_at_a_time.rs"]
mod one_at_a_time;
use one_at_a_time::OneAtATime;
#[path = "support/settings.rs"]
mod settings;
use settings::{env_list, env_number};

// Same allocator as the binaries (src/bin/*.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MOTO_HOW: &str = "run `bash infra/bench-io.sh` (it starts a moto of its own), or start the shared one with \
     `bash infra/local-stack.sh start && eval \"$(bash infra/local-stack.sh env)\"`";

fn main() -> ExitCode {
    // `cargo test --benches` runs this without `--bench`: an I/O benchmark has nothing to check there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("io: a benchmark; run it with `cargo bench --bench io`");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("io bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// What the bench is asked to do.
struct Settings {
    latency: Duration,
    kafka_rtt: Duration,
    runs: usize,
    today_runs: usize,
    events: Vec<String>,
    paths: Vec<Path>,
    /// The Lambda deadline of each invocation: a case that does not finish in it fails.
    invocation_timeout: Duration,
    /// Run the batched path on the 6 MB event even when moto's transactions are slow.
    force_slow_moto: bool,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let latency_ms = env_number("IO_BENCH_LATENCY_MS", 5)?;
        let paths = env_list(
            "IO_BENCH_PATHS",
            "today,batched",
            &["today", "batched", "puts"],
        )?
        .iter()
        .map(|p| Path::named(p))
        .collect();
        Ok(Self {
            latency: Duration::from_millis(latency_ms),
            kafka_rtt: Duration::from_millis(env_number("IO_BENCH_KAFKA_RTT_MS", latency_ms)?),
            runs: env_number("IO_BENCH_RUNS", 3)?.max(1) as usize,
            today_runs: env_number("IO_BENCH_TODAY_RUNS", 1)?.max(1) as usize,
            events: env_list("IO_BENCH_EVENTS", "1k,6MB", &["1k", "6MB"])?,
            paths,
            invocation_timeout: Duration::from_secs(
                env_number("IO_BENCH_INVOCATION_TIMEOUT_S", 300)?.max(5),
            ),
            force_slow_moto: env_number("IO_BENCH_FORCE_SLOW_MOTO", 0)? != 0,
        })
    }
}

/// The command that runs this again with the same settings.
fn reproduce() -> String {
    let mut settings: Vec<String> = std::env::vars()
        .filter(|(name, value)| {
            name.starts_with("IO_BENCH_") && name != "IO_BENCH_MOTO" && !value.trim().is_empty()
        })
        .map(|(name, value)| format!("{name}={value} "))
        .collect();
    settings.sort();
    let settings = settings.concat();
    if std::env::var("IO_BENCH_MOTO").is_ok_and(|v| v.contains("bench-io.sh")) {
        format!("{settings}bash infra/bench-io.sh")
    } else {
        format!(
            "bash infra/local-stack.sh start && eval \"$(bash infra/local-stack.sh env)\" && {settings}cargo bench --bench io"
        )
    }
}

/// One way of running the consumer.
#[derive(Debug, Clone, Copy)]
struct Path {
    name: &'static str,
    /// The store behind [`OneAtATime`]: one request per key.
    one_at_a_time: bool,
    /// How the store claims a chunk (the batched paths).
    claims: ClaimMode,
    /// `ProcessorSettings::pipeline_publishes`.
    pipeline_publishes: bool,
}

impl Path {
    fn named(name: &str) -> Self {
        match name {
            "today" => Self {
                name: "today",
                one_at_a_time: true,
                claims: ClaimMode::Transaction,
                pipeline_publishes: false,
            },
            "puts" => Self {
                name: "puts",
                one_at_a_time: false,
                claims: ClaimMode::ConcurrentPuts {
                    concurrency: READ_AHEAD,
                },
                pipeline_publishes: true,
            },
            _ => Self {
                name: "batched",
                one_at_a_time: false,
                claims: ClaimMode::Transaction,
                pipeline_publishes: true,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The latency proxy in front of moto.

/// One HTTP request through the proxy.
#[derive(Debug, Clone)]
struct Exchange {
    /// The operation of its `X-Amz-Target` (`PutItem`, ...), or `?` without one.
    operation: String,
    body: Vec<u8>,
    /// When its last byte reached the proxy.
    sent: Instant,
    /// When the first byte of its answer reached the proxy.
    answered: Option<Instant>,
}

#[derive(Debug, Default)]
struct ProxyLog {
    exchanges: Vec<Exchange>,
    /// Connections whose HTTP framing could not be followed (chunked bodies): their later requests
    /// are not counted.
    lost: usize,
}

/// A TCP proxy on 127.0.0.1 that holds every client-to-server chunk for `latency` before
/// forwarding it (a chunk is forwarded `latency` after it arrived, so a request split over several
/// reads is delayed once), and logs each HTTP request. It runs on its own runtime so that the
/// consumer's CPU work does not delay its timers.
struct LatencyProxy {
    addr: SocketAddr,
    log: Arc<Mutex<ProxyLog>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LatencyProxy {
    fn start(upstream: SocketAddr, latency: Duration) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latency-proxy")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the proxy's runtime: {e}"))?;
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let log: Arc<Mutex<ProxyLog>> = Arc::default();
        let accept_log = log.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, latency, accept_log.clone()));
            }
        });
        Ok(Self {
            addr,
            log,
            runtime: Some(runtime),
        })
    }

    /// The requests since the last call, and how many connections were lost to the count.
    fn take(&self) -> (Vec<Exchange>, usize) {
        let mut log = self.log.lock().unwrap();
        let lost = log.lost;
        (std::mem::take(&mut log.exchanges), lost)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    latency: Duration,
    log: Arc<Mutex<ProxyLog>>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Requests of this connection awaiting their answer (indexes into the log). HTTP/1.1 without
    // pipelining: one at a time, answered in order.
    let waiting: Arc<Mutex<VecDeque<usize>>> = Arc::default();
    let (chunks, mut delayed) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();

    let requests = {
        let (log, waiting) = (log.clone(), waiting.clone());
        async move {
            let mut framer = RequestFramer::default();
            let mut buffer = Vec::with_capacity(64 * 1024);
            loop {
                buffer.clear();
                let n = match client_read.read_buf(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let now = Instant::now();
                let was_lost = framer.lost;
                let complete = framer.feed(&buffer[..n]);
                {
                    let mut log = log.lock().unwrap();
                    if framer.lost && !was_lost {
                        log.lost += 1;
                    }
                    for (operation, body) in complete {
                        log.exchanges.push(Exchange {
                            operation,
                            body,
                            sent: now,
                            answered: None,
                        });
                        waiting.lock().unwrap().push_back(log.exchanges.len() - 1);
                    }
                }
                if chunks.send((now, buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    };
    let forward = async move {
        while let Some((arrived, bytes)) = delayed.recv().await {
            tokio::time::sleep_until((arrived + latency).into()).await;
            if server_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let answers = async move {
        let mut buffer = Vec::with_capacity(64 * 1024);
        loop {
            buffer.clear();
            let n = match server_read.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            if let Some(index) = waiting.lock().unwrap().pop_front() {
                let mut log = log.lock().unwrap();
                // The log may have been taken (and restarted) since the request was sent.
                if let Some(exchange) = log.exchanges.get_mut(index) {
                    exchange.answered.get_or_insert(now);
                }
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, forward, answers);
}

/// Follows the HTTP/1.1 requests of one client-to-server stream (heads, then `Content-Length`
/// bodies): each request's operation and body.
#[derive(Debug, Default)]
struct RequestFramer {
    head: Vec<u8>,
    /// The request whose body is being read: its operation, its body so far, the bytes to come.
    current: Option<(String, Vec<u8>, usize)>,
    lost: bool,
}

impl RequestFramer {
    /// The requests that end in `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut complete = Vec::new();
        while !self.lost {
            if let Some((_, body, left)) = &mut self.current {
                let n = (*left).min(bytes.len());
                body.extend_from_slice(&bytes[..n]);
                *left -= n;
                bytes = &bytes[n..];
                if *left > 0 {
                    break;
                }
                let (operation, body, _) = self.current.take().expect("a current request");
                complete.push((operation, body));
                continue;
            }
            if bytes.is_empty() {
                break;
            }
            let before = self.head.len();
            let search_from = before.saturating_sub(3);
            self.head.extend_from_slice(bytes);
            let Some(at) = self.head[search_from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            else {
                if self.head.len() > 1 << 20 {
                    self.lost = true;
                }
                break;
            };
            let end = search_from + at + 4;
            bytes = &bytes[end - before..];
            let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
            self.head.clear();
            let mut operation = "?".to_owned();
            let mut length = 0;
            for line in head.split("\r\n").skip(1) {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "x-amz-target" => {
                        operation = value.rsplit('.').next().unwrap_or(value).to_owned();
                    }
                    "content-length" => match value.parse() {
                        Ok(n) => length = n,
                        Err(_) => self.lost = true,
                    },
                    "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                        self.lost = true;
                    }
                    _ => {}
                }
            }
            self.current = Some((operation, Vec::with_capacity(length), length));
        }
        complete
    }
}

// ---------------------------------------------------------------------------------------------
// The Kafka side: a mock cluster with a round-trip time and request tracking, and a timed sink.

/// A mock cluster owned by a producer handle created with `test.mock.num.brokers`, so that its raw
/// pointer is reachable (`rd_kafka_handle_mock_cluster`) for request tracking, which `MockCluster`
/// does not expose. The pointer lives as long as `owner`.
struct MockBroker {
    owner: BaseProducer,
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    bootstrap: String,
}

impl MockBroker {
    fn start(topics: &[(&str, i32)], rtt: Duration) -> Result<Self, String> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .map_err(|e| format!("cannot create the mock cluster: {e}"))?;
        let bootstrap = {
            let mock = owner
                .client()
                .mock_cluster()
                .ok_or("the producer has no mock cluster")?;
            for (topic, partitions) in topics {
                mock.create_topic(topic, *partitions, 1)
                    .map_err(|e| format!("cannot create topic {topic}: {e}"))?;
            }
            mock.broker_round_trip_time(-1, rtt)
                .map_err(|e| format!("cannot set the broker's round-trip time: {e}"))?;
            mock.bootstrap_servers()
        };
        // SAFETY: a handle created with `test.mock.num.brokers` owns its mock cluster until the
        // handle is destroyed; `owner` outlives every use of the pointer (it is a field of `self`).
        let cluster = unsafe { rdsys::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
        if cluster.is_null() {
            return Err("the producer's mock cluster has no handle".into());
        }
        Ok(Self {
            owner,
            cluster,
            bootstrap,
        })
    }

    /// Starts (again) recording requests, forgetting those recorded so far.
    fn track(&self) {
        let _ = &self.owner;
        // SAFETY: `cluster` is valid while `owner` lives.
        unsafe { rdsys::rd_kafka_mock_start_request_tracking(self.cluster) };
    }

    /// How many Produce requests reached the broker since [`Self::track`].
    fn produce_requests(&self) -> usize {
        let mut count = 0usize;
        // SAFETY: `cluster` is valid while `owner` lives; the array and its elements are copies
        // that we own and free with `rd_kafka_mock_request_destroy_array`.
        unsafe {
            let requests = rdsys::rd_kafka_mock_get_requests(self.cluster, &mut count);
            if requests.is_null() {
                return 0;
            }
            let produced = (0..count)
                .filter(|&i| {
                    rdsys::rd_kafka_mock_request_api_key(*requests.add(i))
                        == RDKafkaApiKey::Produce as i16
                })
                .count();
            rdsys::rd_kafka_mock_request_destroy_array(requests, count);
            produced
        }
    }
}

/// One message through [`TimedSink`]: its id, when it was handed over, when its acknowledgement
/// was awaited to the end.
#[derive(Debug, Clone)]
struct Sent {
    id: Option<String>,
    sent: Instant,
    acknowledged: Instant,
}

/// Forwards every [`MessageSink`] method to the Kafka sink, noting each message's times.
struct TimedSink {
    inner: Arc<KafkaSink>,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl TimedSink {
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut self.log.lock().unwrap())
    }
}

fn id_of(message: &OutboundMessage) -> Option<String> {
    message
        .message_id()
        .map(|id| String::from_utf8_lossy(id).into_owned())
}

#[async_trait]
impl MessageSink for TimedSink {
    async fn publish(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        let id = id_of(&message);
        let sent = Instant::now();
        let result = self.inner.publish(message, timeout).await;
        self.log.lock().unwrap().push(Sent {
            id,
            sent,
            acknowledged: Instant::now(),
        });
        result
    }

    async fn send(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<PendingAck, SinkError> {
        let id = id_of(&message);
        let sent = Instant::now();
        let ack = self.inner.send(message, timeout).await?;
        let log = self.log.clone();
        Ok(async move {
            let result = ack.await;
            log.lock().unwrap().push(Sent {
                id,
                sent,
                acknowledged: Instant::now(),
            });
            result
        }
        .boxed())
    }

    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        window: PublishWindow,
        timeout: Duration,
    ) -> Result<Vec<bool>, SinkError> {
        self.inner.find_published(topic, ids, window, timeout).await
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// The length of the union of `intervals` (start, end), in their unit.
fn busy_time(mut intervals: Vec<(f64, f64)>) -> f64 {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in intervals {
        match &mut current {
            Some((_, e)) if start <= *e => *e = e.max(end),
            _ => {
                if let Some((s, e)) = current {
                    total += e - s;
                }
                current = Some((start, end));
            }
        }
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

/// How many waits in sequence `intervals` (sent, answered) of one partition cost: a new wave starts
/// with the first request sent once an answer of the current wave has come back.
fn waves(mut intervals: Vec<(f64, f64)>) -> usize {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut count = 0;
    let mut first_answer = f64::NEG_INFINITY;
    for (sent, answered) in intervals {
        if count == 0 || sent >= first_answer {
            count += 1;
            first_answer = answered;
        } else {
            first_answer = first_answer.min(answered);
        }
    }
    count
}

/// CPU time of this process so far (every thread: the consumer, the proxy, librdkafka), from
/// `/proc/self/stat` in clock ticks of 10 ms; `None` where there is no such file.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name in parentheses: state is the 3rd field, utime the 14th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// Every string in a JSON value, depth first.
fn strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// One invocation's figures.
#[derive(Debug, Clone)]
struct Run {
    wall: Duration,
    /// CPU time of the bench process during the invocation.
    cpu: Option<Duration>,
    counts: Counts,
    alerts: u64,
    ddb_by_operation: BTreeMap<String, usize>,
    ddb_requests: usize,
    /// Waves of store requests, all partitions.
    ddb_waves: usize,
    /// The store's own time on a partition's critical path, the mean over partitions (ms).
    server_ms: f64,
    produce_requests: usize,
    messages: usize,
    /// Waves of acknowledgement waits, all partitions.
    ack_waves: usize,
}

/// An event and what is known of it.
struct Event {
    name: &'static str,
    json: String,
    records: usize,
    partitions: usize,
    /// Chunks of all partitions.
    chunks: usize,
    /// Chunks of the longest partition: what runs one after the other.
    chunks_longest: usize,
    /// The fewest DynamoDB requests that can handle the event fresh with its partitions apart: per
    /// partition, a batch read and a transaction per chunk and a write per `COMPLETION_BATCH` keys.
    least_fresh_requests: usize,
    /// The partition (index in the event) of each record's idempotency key.
    partition_of: HashMap<String, usize>,
}

impl Event {
    fn generate(name: &'static str, config: &TelemetryConfig) -> Result<Self, String> {
        let options = match name {
            "1k" => GenerateOptions {
                records: Some(1_000),
                partitions: 4,
                poison_percent: 1.0,
                ..GenerateOptions::default()
            },
            _ => GenerateOptions {
                records: None,
                max_bytes: Some(6_000_000),
                partitions: 4,
                poison_percent: 1.0,
                ..GenerateOptions::default()
            },
        };
        let json = generate_event(&options).0;
        let batch = decode_event(&json).map_err(|e| format!("generated event: {e}"))?;
        let chunks_of = |p: &kafka_esm::event::PartitionBatch| p.records.len().div_ceil(READ_AHEAD);
        // The keys as the processor derives them: the handler's id, else the coordinates.
        let handler = TelemetryHandler::new(
            config.alerts.rules.clone(),
            config.alerts.topic.clone(),
            Arc::new(kafka_esm::sink::MemorySink::new()),
            config.consumer.processor.publish_timeout,
        );
        let mut partition_of = HashMap::new();
        for (index, partition) in batch.partitions.iter().enumerate() {
            for slot in &partition.records {
                let key = match slot {
                    DecodedRecord::Record(record) => match handler.deserialize(record) {
                        Ok(event) => handler.idempotency_key(&event).map_or_else(
                            || coordinates_key(&record.topic, record.partition, record.offset),
                            |id| business_key(&id),
                        ),
                        Err(_) => coordinates_key(&record.topic, record.partition, record.offset),
                    },
                    DecodedRecord::Undecodable(u) => match u.offset {
                        Some(offset) => coordinates_key(&u.topic, u.partition, offset),
                        None => continue,
                    },
                };
                partition_of.insert(key, index);
            }
        }
        Ok(Self {
            name,
            records: batch.record_count(),
            partitions: batch.partitions.len(),
            chunks: batch.partitions.iter().map(chunks_of).sum(),
            chunks_longest: batch.partitions.iter().map(chunks_of).max().unwrap_or(0),
            least_fresh_requests: batch
                .partitions
                .iter()
                .map(|p| 2 * chunks_of(p) + p.records.len().div_ceil(COMPLETION_BATCH))
                .sum(),
            partition_of,
            json,
        })
    }

    /// The partition of the first record key found among the strings of a request body.
    fn partition_of_body(&self, body: &[u8]) -> Option<usize> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let mut found = Vec::new();
        strings(&value, &mut found);
        found
            .into_iter()
            .find_map(|s| self.partition_of.get(s).copied())
    }

    /// The partition of a message id: a record's key (a dead letter), or `<key>#<rule>` (an alert).
    fn partition_of_message(&self, id: &str) -> Option<usize> {
        self.partition_of.get(id).copied().or_else(|| {
            id.rsplit_once('#')
                .and_then(|(key, _)| self.partition_of.get(key).copied())
        })
    }
}

/// Everything a run needs.
struct Bench {
    settings: Settings,
    endpoint: String,
    direct: Client,
    proxied: Client,
    proxy: LatencyProxy,
    broker: MockBroker,
    sink: Arc<TimedSink>,
    config: TelemetryConfig,
}

fn dynamodb_client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "io-bench"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

/// moto's address from `KAFKA_ESM_MOTO_ENDPOINT` (`http://host:port`), checked to answer.
async fn moto(endpoint: &str) -> Result<(SocketAddr, Client), String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("KAFKA_ESM_MOTO_ENDPOINT={endpoint:?} is not an http:// address"))?
        .trim_end_matches('/');
    let addr = tokio::net::lookup_host(authority)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            format!("KAFKA_ESM_MOTO_ENDPOINT={endpoint:?}: cannot resolve {authority}")
        })?;
    let client = dynamodb_client(endpoint);
    match tokio::time::timeout(Duration::from_secs(5), client.list_tables().send()).await {
        Ok(Ok(_)) => Ok((addr, client)),
        Ok(Err(e)) => {
            // The error and its causes, without the SDK's debug dump.
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            Err(format!(
                "moto does not answer at {endpoint} ({why}): {MOTO_HOW}"
            ))
        }
        Err(_) => Err(format!(
            "moto does not answer at {endpoint} within 5 s: {MOTO_HOW}"
        )),
    }
}

/// How long moto takes for one `TransactWriteItems` of 100 fresh claims on a table of 300 items.
/// moto 5.2 deep-copies the whole table once per item of a transaction (≈ 1.4 s here, and growing
/// with the table: about 12 s at 2,500 items); `infra/bench-io.sh` runs a moto that copies only
/// what the transaction touches (≈ 0.1 s).
async fn probe_transactions(direct: &Client) -> Result<Duration, String> {
    let table = format!(
        "kafka-esm-io-probe-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    );
    let store = DynamoDbStore::new(direct.clone(), table.clone());
    store
        .create_table()
        .await
        .map_err(|e| format!("cannot create a table in moto: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let far = now + 24 * 3600 * 1000;
    let result = async {
        let filler: Vec<String> = (0..300).map(|n| format!("probe-filler-{n}")).collect();
        let done: Vec<(&str, CompletedOutcome)> = filler
            .iter()
            .map(|k| (k.as_str(), CompletedOutcome::Processed))
            .collect();
        store
            .complete_many(&done, far)
            .await
            .map_err(|e| e.to_string())?;
        let keys: Vec<String> = (0..100).map(|n| format!("probe-claim-{n}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let before = store.requests();
        let started = Instant::now();
        store
            .try_claim_many(&keys, now, far)
            .await
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        let sent = store.requests().since(&before);
        if sent.transact_write_items != 1 || sent.total() != 1 {
            return Err(format!(
                "100 fresh claims took {} requests ({sent:?}), not one TransactWriteItems",
                sent.total()
            ));
        }
        Ok(took)
    }
    .await;
    let _ = direct.delete_table().table_name(&table).send().await;
    result
}

const ALERTS_PARTITIONS: i32 = 4;

fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let endpoint = match std::env::var("KAFKA_ESM_MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => return Err(format!("KAFKA_ESM_MOTO_ENDPOINT is not set: {MOTO_HOW}")),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let (upstream, direct) = runtime.block_on(moto(&endpoint))?;
    let proxy = LatencyProxy::start(upstream, settings.latency)?;
    let proxied = dynamodb_client(&format!("http://{}", proxy.addr));

    let config = TelemetryConfig::from_lookup(&|_| None).map_err(|e| e.to_string())?;
    let source_topic = GenerateOptions::default().topic;
    let dead_letter_topic = config
        .consumer
        .processor
        .dead_letter_topic_for(&source_topic);
    let broker = MockBroker::start(
        &[
            (config.alerts.topic.as_str(), ALERTS_PARTITIONS),
            (dead_letter_topic.as_str(), 1),
        ],
        settings.kafka_rtt,
    )?;
    let sink = runtime.block_on(async {
        let sink = KafkaSink::new(&KafkaSettings::new(broker.bootstrap.clone()))
            .map_err(|e| format!("cannot create the Kafka sink: {e}"))?;
        // A warm producer, as in a Lambda container past its first invocation.
        for topic in [&config.alerts.topic, &dead_letter_topic] {
            let message = OutboundMessage {
                topic: topic.clone(),
                key: None,
                value: Some(b"warm-up".to_vec()),
                headers: Vec::new(),
            };
            sink.publish(message, Duration::from_secs(10))
                .await
                .map_err(|e| format!("the mock broker refused a warm-up message: {e}"))?;
        }
        Ok::<_, String>(Arc::new(TimedSink {
            inner: Arc::new(sink),
            log: Arc::default(),
        }))
    })?;

    let moto_kind = std::env::var("IO_BENCH_MOTO")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "moto".into());
    println!(
        "io bench: +{} ms per DynamoDB request (a proxy to {moto_kind} at {endpoint}), Kafka broker RTT {} ms (MockCluster); \
         {} run(s) per case, {} on today's path",
        settings.latency.as_millis(),
        settings.kafka_rtt.as_millis(),
        settings.runs,
        settings.today_runs.min(settings.runs),
    );
    let reproduce = reproduce();
    println!("reproduce: {reproduce}");
    // moto 5.2's transactions cost a copy of the whole table per claim: measured, and avoided.
    let mut slow_transactions = None;
    if settings
        .paths
        .iter()
        .any(|p| !p.one_at_a_time && p.claims == ClaimMode::Transaction)
    {
        let took = runtime.block_on(probe_transactions(&direct))?;
        println!(
            "moto: one TransactWriteItems of 100 claims on a 300-item table takes {:.0} ms",
            took.as_secs_f64() * 1e3
        );
        if took > Duration::from_millis(500) && !settings.force_slow_moto {
            println!(
                "moto: SLOW TRANSACTIONS: this moto copies the whole table for each claim of a transaction, so the batched \
                 path's time grows with the table (most of an hour on the 6 MB event, and moto stays busy long after). \
                 The batched path runs once on the 1k event and not on 6MB. Run `bash infra/bench-io.sh` (a moto that \
                 copies only what a transaction touches), or set IO_BENCH_FORCE_SLOW_MOTO=1."
            );
            slow_transactions = Some(took);
        }
    }

    let bench = Bench {
        settings,
        endpoint,
        direct,
        proxied,
        proxy,
        broker,
        sink,
        config,
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    for name in bench.settings.events.clone() {
        let event = Event::generate(if name == "1k" { "1k" } else { "6MB" }, &bench.config)?;
        println!(
            "event {}: {} bytes, {} records, {} partitions, {} chunks of up to {READ_AHEAD} ({} in the longest partition)",
            event.name,
            event.json.len(),
            event.records,
            event.partitions,
            event.chunks,
            event.chunks_longest
        );
        let mut fresh: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
        let mut replayed: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
        for round in 0..bench.settings.runs {
            for path in &bench.settings.paths {
                let transactions = !path.one_at_a_time && path.claims == ClaimMode::Transaction;
                let runs = match (path.one_at_a_time, event.name, slow_transactions) {
                    (true, _, _) => bench.settings.today_runs,
                    (false, "6MB", Some(_)) if transactions => 0,
                    (false, _, Some(_)) if transactions => 1,
                    _ => bench.settings.runs,
                };
                if round >= runs {
                    continue;
                }
                let (f, r) = runtime.block_on(bench.fresh_and_replayed(&event, *path))?;
                eprintln!(
                    "  {} {}: fresh {:.0} ms, replayed {:.0} ms",
                    event.name,
                    path.name,
                    f.wall.as_secs_f64() * 1e3,
                    r.wall.as_secs_f64() * 1e3
                );
                fresh.entry(path.name).or_default().push(f);
                replayed.entry(path.name).or_default().push(r);
            }
        }
        for path in &bench.settings.paths {
            for (kind, runs) in [("fresh", &fresh), ("replayed", &replayed)] {
                if let Some(runs) = runs.get(path.name) {
                    rows.push(Row::of(&event, kind, path.name, runs, &bench.settings));
                }
            }
        }
    }
    print_table(&rows, &bench.settings);
    for row in &rows {
        println!("{}", row.json);
    }
    print_goals(&rows);
    if let Some(took) = slow_transactions {
        println!(
            "moto's transactions are slow ({:.0} ms for 100 claims on 300 items): the batched path's wall times are moto's",
            took.as_secs_f64() * 1e3
        );
    }
    println!(
        "took {:.0} s; reproduce: {reproduce}",
        started.elapsed().as_secs_f64()
    );
    drop(bench);
    drop(runtime);
    Ok(())
}

impl Bench {
    /// A new table; the event handled once (every key new), then again (every record a duplicate).
    async fn fresh_and_replayed(&self, event: &Event, path: Path) -> Result<(Run, Run), String> {
        let table = format!(
            "kafka-esm-io-bench-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let creator = DynamoDbStore::new(self.direct.clone(), table.clone());
        creator.create_table().await.map_err(|e| {
            format!(
                "cannot create table {table} in moto at {}: {e}",
                self.endpoint
            )
        })?;
        // The store counts its own requests (`DynamoDbStore::requests`, shared by its clones): a
        // check on the proxy's count.
        let counted =
            DynamoDbStore::new(self.proxied.clone(), table.clone()).with_claims(path.claims);
        let store: Arc<dyn IdempotencyStore> = if path.one_at_a_time {
            Arc::new(OneAtATime(counted.clone()))
        } else {
            Arc::new(counted.clone())
        };
        // Open the proxied client's first connection (a Lambda container past its first invocation).
        let _ = store.completed(&["io-bench-warm-up"], 0).await;
        let fresh = self.invoke(event, store.clone(), &counted, path).await;
        let replayed = match &fresh {
            Ok(_) => self.invoke(event, store, &counted, path).await,
            Err(_) => Err(String::new()),
        };
        let _ = self.direct.delete_table().table_name(&table).send().await;
        let (fresh, replayed) = (fresh?, replayed?);
        let c = fresh.counts;
        if c.processed + c.dead_lettered != event.records {
            return Err(format!(
                "{} {} fresh: not every record was processed or dead-lettered ({c:?})",
                event.name, path.name
            ));
        }
        if replayed.counts.duplicates != event.records {
            return Err(format!(
                "{} {} replayed: not every record was a duplicate ({:?})",
                event.name, path.name, replayed.counts
            ));
        }
        Ok((fresh, replayed))
    }

    async fn invoke(
        &self,
        event: &Event,
        store: Arc<dyn IdempotencyStore>,
        counted: &DynamoDbStore,
        path: Path,
    ) -> Result<Run, String> {
        let mut config = self.config.clone();
        config.consumer.processor.pipeline_publishes = path.pipeline_publishes;
        let consumer = telemetry_consumer(&config, store, self.sink.clone(), self.sink.clone());
        let invocation = InvocationInfo::new(
            "io-bench",
            "io-bench",
            Deadline::after(self.settings.invocation_timeout, Duration::from_secs(1)),
        );
        let counted_before = counted.requests();
        self.proxy.take();
        self.sink.take();
        self.broker.track();
        let cpu_before = process_cpu();
        let started = Instant::now();
        let invocation = consumer.invoke(&event.json, &invocation).await;
        let wall = started.elapsed();
        let cpu = process_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        // Answers still on their way through the proxy are logged in a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (exchanges, lost) = self.proxy.take();
        let sent = self.sink.take();
        let produce_requests = self.broker.produce_requests();
        let what = format!("{} {}", event.name, path.name);
        if lost > 0 {
            return Err(format!(
                "{what}: {lost} connection(s) sent bodies the proxy cannot follow (chunked): requests not counted"
            ));
        }
        if let Err(e) = &invocation.result {
            return Err(format!("{what}: the invocation failed: {e}"));
        }
        let counts = invocation.report.counts();
        if counts.unfinished > 0 {
            return Err(format!(
                "{what}: {} of {} records unfinished after {:.1} s (IO_BENCH_INVOCATION_TIMEOUT_S={})",
                counts.unfinished,
                counts.records,
                wall.as_secs_f64(),
                self.settings.invocation_timeout.as_secs()
            ));
        }
        let by_store = counted.requests().since(&counted_before).total() as usize;
        if by_store != exchanges.len() {
            return Err(format!(
                "{what}: the proxy saw {} DynamoDB requests, the store counted {by_store}",
                exchanges.len()
            ));
        }
        let at = |t: Instant| t.saturating_duration_since(started).as_secs_f64() * 1e3;

        // The store: requests by operation, then per partition.
        let mut ddb_by_operation = BTreeMap::new();
        let mut per_partition = vec![Vec::new(); event.partitions];
        for exchange in &exchanges {
            *ddb_by_operation
                .entry(exchange.operation.clone())
                .or_insert(0) += 1;
            let Some(partition) = event.partition_of_body(&exchange.body) else {
                return Err(format!(
                    "{what}: a {} request names no record of the event",
                    exchange.operation
                ));
            };
            let answered = exchange.answered.unwrap_or(started + wall);
            per_partition[partition].push((at(exchange.sent), at(answered)));
        }
        let latency_ms = self.settings.latency.as_secs_f64() * 1e3;
        let mut ddb_waves = 0;
        let mut server_ms = 0.0;
        for intervals in per_partition {
            let waves = waves(intervals.clone());
            ddb_waves += waves;
            server_ms += (busy_time(intervals) - waves as f64 * latency_ms).max(0.0);
        }
        server_ms /= event.partitions.max(1) as f64;

        // Kafka: acknowledgement waits per partition.
        let mut per_partition = vec![Vec::new(); event.partitions];
        for message in &sent {
            let partition = message
                .id
                .as_deref()
                .and_then(|id| event.partition_of_message(id))
                .ok_or_else(|| format!("{what}: a message names no record of the event"))?;
            per_partition[partition].push((at(message.sent), at(message.acknowledged)));
        }
        let ack_waves = per_partition.into_iter().map(waves).sum();
        Ok(Run {
            wall,
            cpu,
            counts,
            alerts: consumer.processor().handler().alerts_published(),
            ddb_requests: exchanges.len(),
            ddb_by_operation,
            ddb_waves,
            server_ms,
            produce_requests,
            messages: sent.len(),
            ack_waves,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

struct Row {
    event: &'static str,
    kind: &'static str,
    path: &'static str,
    records: usize,
    wall_ms: f64,
    without_server_ms: f64,
    ddb_per_100: f64,
    /// The fewest requests per 100 records there can be (fresh: [`Event::least_fresh_requests`];
    /// replayed: one batch read per chunk).
    least_per_100: f64,
    ddb_per_chunk: f64,
    ddb_seq_per_chunk: f64,
    acks_seq_per_chunk: f64,
    text: Vec<String>,
    json: String,
}

impl Row {
    fn of(
        event: &Event,
        kind: &'static str,
        path: &'static str,
        runs: &[Run],
        settings: &Settings,
    ) -> Self {
        let mut walls: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect();
        walls.sort_by(f64::total_cmp);
        let (median, min, max) = (walls[walls.len() / 2], walls[0], walls[walls.len() - 1]);
        // Counts come from the median run (they hardly vary between runs).
        let run = runs
            .iter()
            .find(|r| r.wall.as_secs_f64() * 1e3 == median)
            .unwrap_or(&runs[0]);
        let records = event.records as f64;
        let chunks = event.chunks.max(1) as f64;
        let per_100 = |n: f64| n * 100.0 / records;
        let ddb_per_100 = per_100(run.ddb_requests as f64);
        let least_per_100 = per_100(match kind {
            "fresh" => event.least_fresh_requests as f64,
            _ => event.chunks as f64,
        });
        let ddb_per_chunk = run.ddb_requests as f64 / chunks;
        let ddb_seq_per_chunk = run.ddb_waves as f64 / chunks;
        let acks_seq_per_chunk = run.ack_waves as f64 / chunks;
        let without_server_ms = (median - run.server_ms).max(0.0);
        let operations = run
            .ddb_by_operation
            .iter()
            .map(|(op, n)| format!("{op} {:.2}", per_100(*n as f64)))
            .collect::<Vec<_>>()
            .join(", ");
        let text = vec![
            format!("{} {}", event.name, kind),
            path.to_owned(),
            format!("{}", event.records),
            format!("{median:.0} ({min:.0}–{max:.0}) ×{}", walls.len()),
            format!("{:.0}", records / (median / 1e3)),
            format!("{ddb_per_100:.2}"),
            format!("{ddb_per_chunk:.2}"),
            format!("{ddb_seq_per_chunk:.2}"),
            format!("{:.0}", run.server_ms),
            format!("{without_server_ms:.0}"),
            run.cpu
                .map_or("?".into(), |c| format!("{:.0}", c.as_secs_f64() * 1e3)),
            format!("{} / {}", run.produce_requests, run.messages),
            format!("{acks_seq_per_chunk:.2}"),
            operations,
        ];
        let json = json!({
            "bench": "io",
            "event": event.name,
            "case": kind,
            "path": path,
            "records": event.records,
            "bytes": event.json.len(),
            "partitions": event.partitions,
            "chunks": event.chunks,
            "chunks_longest_partition": event.chunks_longest,
            "latency_ms": settings.latency.as_secs_f64() * 1e3,
            "kafka_rtt_ms": settings.kafka_rtt.as_secs_f64() * 1e3,
            "runs": walls.len(),
            "wall_ms_median": median,
            "wall_ms_min": min,
            "wall_ms_max": max,
            "records_per_s": records / (median / 1e3),
            "processed": run.counts.processed,
            "duplicates": run.counts.duplicates,
            "dead_lettered": run.counts.dead_lettered,
            "alerts": run.alerts,
            "ddb_requests": run.ddb_requests,
            "ddb_requests_per_100": ddb_per_100,
            "ddb_requests_per_100_least": least_per_100,
            "ddb_requests_per_chunk": ddb_per_chunk,
            "ddb_requests_by_operation": run.ddb_by_operation,
            "ddb_in_sequence_per_chunk": ddb_seq_per_chunk,
            "ddb_server_ms_per_partition": run.server_ms,
            "wall_ms_without_server_time": without_server_ms,
            "bench_cpu_ms": run.cpu.map(|c| c.as_secs_f64() * 1e3),
            "kafka_messages": run.messages,
            "kafka_produce_requests": run.produce_requests,
            "kafka_ack_waits_in_sequence_per_chunk": acks_seq_per_chunk,
        })
        .to_string();
        Self {
            event: event.name,
            kind,
            path,
            records: event.records,
            wall_ms: median,
            without_server_ms,
            ddb_per_100,
            least_per_100,
            ddb_per_chunk,
            ddb_seq_per_chunk,
            acks_seq_per_chunk,
            text,
            json,
        }
    }
}

fn print_table(rows: &[Row], settings: &Settings) {
    let header = [
        "case",
        "path",
        "records",
        "wall ms (min–max) ×runs",
        "records/s",
        "DDB req/100 rec",
        "DDB req/chunk",
        "DDB round trips in seq./chunk",
        "server ms",
        "wall − server ms",
        "bench CPU ms",
        "Kafka produce req / msgs",
        "ack waits in seq./chunk",
        "DDB requests per 100 records, by operation",
    ];
    println!();
    println!(
        "+{} ms per DynamoDB request, Kafka RTT {} ms",
        settings.latency.as_millis(),
        settings.kafka_rtt.as_millis()
    );
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in rows {
        println!("| {} |", row.text.join(" | "));
    }
    println!();
}

/// The goals of issue #12 (item 4), checked on the batched path.
fn print_goals(rows: &[Row]) {
    let find = |event: &str, kind: &str| {
        rows.iter()
            .find(|r| r.path == "batched" && r.event == event && r.kind == kind)
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    // Above the goal but at the fewest requests the event's partitions allow: nothing left to save.
    let against_least = |value: f64, goal: f64, least: f64| {
        if value <= goal {
            "met"
        } else if value <= least + 1e-9 {
            "not met, and the least there can be"
        } else {
            "NOT met"
        }
    };
    println!(
        "goals (batched path; a partition's last chunk is partial, so requests per 100 records exceed requests per chunk; \
         `least` is the fewest the request sizes allow for the event's partitions):"
    );
    for event in ["1k", "6MB"] {
        if let Some(row) = find(event, "fresh") {
            println!(
                "  {event} fresh: {:.2} DynamoDB requests per 100 records (goal ≤ 6; least {:.2}): {}; {:.2} per chunk: {}",
                row.ddb_per_100,
                row.least_per_100,
                against_least(row.ddb_per_100, 6.0, row.least_per_100),
                row.ddb_per_chunk,
                verdict(row.ddb_per_chunk <= 6.0)
            );
            println!(
                "  {event} fresh: {:.2} store round trips in sequence per chunk (goal ≤ 3) and {:.2} acknowledgement waits (goal ≤ 1): {}",
                row.ddb_seq_per_chunk,
                row.acks_seq_per_chunk,
                verdict(row.ddb_seq_per_chunk <= 3.0 && row.acks_seq_per_chunk <= 1.0)
            );
        }
        if let Some(row) = find(event, "replayed") {
            println!(
                "  {event} replayed: {:.2} DynamoDB requests per 100 duplicates (goal ≤ 1.1; least {:.2}): {}; {:.2} per chunk: {}",
                row.ddb_per_100,
                row.least_per_100,
                against_least(row.ddb_per_100, 1.1, row.least_per_100),
                row.ddb_per_chunk,
                verdict(row.ddb_per_chunk <= 1.1)
            );
        }
    }
    if let Some(row) = find("6MB", "fresh") {
        println!(
            "  6MB fresh: {:.0} ms for {} records (goal < 1000 ms): {}; without the store's own time {:.0} ms: {} \
             (moto answers one request at a time; `cargo bench --bench latency` times it without a server)",
            row.wall_ms,
            row.records,
            verdict(row.wall_ms < 1000.0),
            row.without_server_ms,
            verdict(row.without_server_ms < 1000.0)
        );
    }
}
