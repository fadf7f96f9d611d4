//! Peak heap of one consumer invocation on a 6 MB batch, as the Lambda runs it: the request body,
//! the runtime's `Box<RawValue>` copy of it, and everything `Consumer::invoke` allocates.
//!
//! Run: `cargo bench --bench memory`. It prints the peak; the goal is under 64 MB so the function
//! fits a 128 MB Lambda.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::MemoryStore;
use kafka_esm::retry::Deadline;
use kafka_esm::sink::MemorySink;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_telemetry::generate::{GenerateOptions, generate_event};
use serde_json::value::RawValue;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let options = GenerateOptions {
        records: None,
        max_bytes: Some(6_000_000),
        ..GenerateOptions::default()
    };
    let (json, records) = generate_event(&options);
    let body: Vec<u8> = json.into_bytes();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = TelemetryConfig::from_lookup(&|_| None).unwrap();
    let sink = Arc::new(MemorySink::new());
    let consumer = telemetry_consumer(&config, Arc::new(MemoryStore::new()), sink.clone(), sink);

    let baseline = CURRENT.load(Ordering::Relaxed) - body.len();
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    let payload: Box<RawValue> = serde_json::from_slice(&body).unwrap();
    let invocation = InvocationInfo::new(
        "memory",
        "memory",
        Deadline::after(Duration::from_secs(900), Duration::from_secs(2)),
    );
    let result = runtime.block_on(consumer.invoke(payload.get(), &invocation));
    assert!(result.result.is_ok());
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    println!(
        "memory/6MB_batch: {} records, {:.1} MiB body; peak heap during the invocation {:.1} MiB (body and runtime copy included)",
        records,
        mib(body.len()),
        mib(peak)
    );
    drop(result);
}
