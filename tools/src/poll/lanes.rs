//! One lane per partition: as on AWS, the batches of different partitions are delivered at the same
//! time, and the batches of one partition one after another, in offset order. Each lane cuts its
//! own batches ([`BatchBuilder`]) and queues the cut ones while its previous batch is in flight.
//!
//! Memory is bounded by reading less, not by pausing partitions: when a partition's queue holds
//! `hold_at` records, the poller stops taking records until that queue is down to half, while the
//! deliveries go on. (librdkafka's pause and resume lost records under load on Tansu: the records it
//! had fetched before the pause were not all fetched again, and the poller committed past them; a
//! seek back after the resume was not served either. The load run checks this.) A record a lane
//! already took (an offset below its next one, after a rebalance) is dropped if it comes again.
//!
//! Pure bookkeeping: the poller feeds it records and completions and carries out what it answers.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::batch::{BatchBuilder, BatchLimits};
use kafka_esm::record::KafkaRecord;

/// A partition: `(topic, partition)`.
pub type PartitionKey = (String, i32);

/// The default `hold_at`: records waiting in one partition's queue before the poller stops reading.
pub const DEFAULT_PARTITION_BUFFER_RECORDS: usize = 20_000;

#[derive(Debug)]
struct Lane {
    builder: BatchBuilder,
    /// When the batch being filled must be cut (its first record's time plus the window).
    window_ends: Option<Instant>,
    /// Cut batches not yet delivered, oldest first.
    queued: VecDeque<Vec<KafkaRecord>>,
    /// Records in `queued`.
    queued_records: usize,
    in_flight: bool,
    /// The offset after the last record taken in.
    next_offset: Option<i64>,
}

/// What became of a record given to [`Lanes::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In its partition's batch.
    Taken,
    /// Already taken before (fetched again after a rebalance): dropped.
    Duplicate,
}

/// The lanes of every partition seen so far.
#[derive(Debug)]
pub struct Lanes {
    limits: BatchLimits,
    bootstrap_servers: String,
    event_source_arn: Option<String>,
    lanes: HashMap<PartitionKey, Lane>,
    /// Lanes with a queued batch and none in flight, in the order they became ready.
    ready: VecDeque<PartitionKey>,
    max_in_flight: usize,
    hold_at: usize,
    /// The partition whose full queue holds reading back, until it is down to half.
    holding: Option<PartitionKey>,
    batches_cut: u64,
}

impl Lanes {
    /// Lanes cutting batches under `limits` for events naming `bootstrap_servers` (and the MSK
    /// `event_source_arn`), with at most `max_in_flight` deliveries at once (at least one), holding
    /// reading back while `hold_at` records (at least one batch) wait in one partition's queue.
    pub fn new(
        limits: BatchLimits,
        bootstrap_servers: &str,
        event_source_arn: Option<&str>,
        max_in_flight: usize,
        hold_at: usize,
    ) -> Self {
        Self {
            limits,
            bootstrap_servers: bootstrap_servers.to_owned(),
            event_source_arn: event_source_arn.map(str::to_owned),
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            hold_at: hold_at.max(limits.max_records).max(1),
            holding: None,
            batches_cut: 0,
        }
    }

    /// Gives a record to its partition's lane, which cuts the batch when it is full.
    pub fn push(&mut self, record: KafkaRecord, now: Instant) -> Admission {
        let key = (record.topic.clone(), record.partition);
        let lane = self.lanes.entry(key.clone()).or_insert_with(|| Lane {
            builder: BatchBuilder::new(
                self.limits,
                &self.bootstrap_servers,
                self.event_source_arn.as_deref(),
            ),
            window_ends: None,
            queued: VecDeque::new(),
            queued_records: 0,
            in_flight: false,
            next_offset: None,
        });
        if lane.next_offset.is_some_and(|next| record.offset < next) {
            return Admission::Duplicate;
        }
        lane.next_offset = Some(record.offset + 1);
        if lane.builder.is_empty() {
            lane.window_ends = Some(now + self.limits.window);
        }
        if lane.builder.push(record).is_some() {
            self.cut(&key, now);
        }
        Admission::Taken
    }

    /// Cuts every batch whose window has ended; returns how many.
    pub fn cut_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<PartitionKey> = self
            .lanes
            .iter()
            .filter(|(_, lane)| lane.window_ends.is_some_and(|end| end <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            self.cut(key, now);
        }
        expired.len()
    }

    /// Queues the lane's batch (and any batch a carried record fills at once).
    fn cut(&mut self, key: &PartitionKey, now: Instant) {
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        loop {
            let batch = lane.builder.take();
            if !batch.is_empty() {
                lane.queued_records += batch.len();
                lane.queued.push_back(batch);
                self.batches_cut += 1;
                if !lane.in_flight && lane.queued.len() == 1 {
                    self.ready.push_back(key.clone());
                }
            }
            if !lane.builder.is_full() {
                break;
            }
        }
        lane.window_ends = (!lane.builder.is_empty()).then(|| now + self.limits.window);
    }

    /// When the next batching window ends.
    pub fn next_window_end(&self) -> Option<Instant> {
        self.lanes.values().filter_map(|l| l.window_ends).min()
    }

    /// The next batch to deliver, if a lane has one and fewer than the maximum are in flight. The
    /// caller reports its end with [`Self::finished`].
    pub fn next_delivery(&mut self) -> Option<(PartitionKey, Vec<KafkaRecord>)> {
        while self.in_flight() < self.max_in_flight {
            let key = self.ready.pop_front()?;
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            if lane.in_flight {
                continue;
            }
            let Some(batch) = lane.queued.pop_front() else {
                continue;
            };
            lane.queued_records -= batch.len();
            lane.in_flight = true;
            return Some((key, batch));
        }
        None
    }

    /// The delivery of `key`'s batch has ended: its next batch may go.
    pub fn finished(&mut self, key: &PartitionKey) {
        if let Some(lane) = self.lanes.get_mut(key)
            && lane.in_flight
        {
            lane.in_flight = false;
            if !lane.queued.is_empty() {
                self.ready.push_back(key.clone());
            }
        }
    }

    /// True while the poller must not take records: a partition's queue reached `hold_at` records
    /// and is not yet down to half.
    pub fn hold_reading(&mut self) -> bool {
        if let Some(key) = &self.holding {
            let queued = self.lanes.get(key).map_or(0, |l| l.queued_records);
            if queued > self.hold_at / 2 {
                return true;
            }
            self.holding = None;
        }
        self.holding = self
            .lanes
            .iter()
            .find(|(_, lane)| lane.queued_records >= self.hold_at)
            .map(|(key, _)| key.clone());
        self.holding.is_some()
    }

    /// Deliveries in flight.
    pub fn in_flight(&self) -> usize {
        self.lanes.values().filter(|l| l.in_flight).count()
    }

    /// True when no record is buffered, queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.lanes
            .values()
            .all(|l| !l.in_flight && l.builder.is_empty() && l.queued.is_empty())
    }

    /// Batches cut so far.
    pub fn batches_cut(&self) -> u64 {
        self.batches_cut
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(partition: i32, offset: i64) -> KafkaRecord {
        let mut r = KafkaRecord::new("t", partition, offset);
        r.value = Some(b"{}".to_vec());
        r
    }

    fn lanes(max_records: usize, max_in_flight: usize) -> Lanes {
        lanes_holding_at(max_records, max_in_flight, 2 * max_records)
    }

    fn lanes_holding_at(max_records: usize, max_in_flight: usize, hold_at: usize) -> Lanes {
        Lanes::new(
            BatchLimits {
                max_records,
                window: Duration::from_millis(100),
                ..BatchLimits::default()
            },
            "127.0.0.1:9092",
            None,
            max_in_flight,
            hold_at,
        )
    }

    fn offsets(batch: &[KafkaRecord]) -> Vec<i64> {
        batch.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn partitions_are_delivered_at_once_and_each_partition_in_order() {
        let now = Instant::now();
        let mut lanes = lanes(2, 8);
        for offset in 0..4 {
            lanes.push(record(0, offset), now);
        }
        for offset in 0..2 {
            lanes.push(record(1, offset), now);
        }
        let (first, batch) = lanes.next_delivery().unwrap();
        assert_eq!((first.1, offsets(&batch)), (0, vec![0, 1]));
        let (second, batch) = lanes.next_delivery().unwrap();
        assert_eq!((second.1, offsets(&batch)), (1, vec![0, 1]));
        assert!(
            lanes.next_delivery().is_none(),
            "partition 0's second batch waits for its first"
        );
        assert_eq!(lanes.in_flight(), 2);
        lanes.finished(&first);
        let (_, batch) = lanes.next_delivery().unwrap();
        assert_eq!(offsets(&batch), vec![2, 3]);
        assert_eq!(lanes.batches_cut(), 3);
    }

    #[test]
    fn the_maximum_in_flight_holds_the_other_partitions_back() {
        let now = Instant::now();
        let mut lanes = lanes(1, 1);
        lanes.push(record(0, 0), now);
        lanes.push(record(1, 0), now);
        let (first, _) = lanes.next_delivery().unwrap();
        assert!(lanes.next_delivery().is_none());
        lanes.finished(&first);
        let (second, _) = lanes.next_delivery().unwrap();
        assert_eq!(second.1, 1);
    }

    #[test]
    fn a_full_partition_holds_reading_back_until_it_is_down_to_half() {
        let now = Instant::now();
        let mut lanes = lanes_holding_at(1, 8, 4);
        lanes.push(record(0, 0), now);
        let (mut key, _) = lanes.next_delivery().unwrap();
        for offset in 1..4 {
            lanes.push(record(0, offset), now);
        }
        assert!(!lanes.hold_reading(), "3 wait");
        lanes.push(record(0, 4), now);
        for waiting in [4, 3] {
            assert!(lanes.hold_reading(), "{waiting} wait");
            lanes.finished(&key);
            key = lanes.next_delivery().unwrap().0;
        }
        assert!(!lanes.hold_reading(), "2 wait");
    }

    #[test]
    fn records_fetched_again_are_dropped() {
        let now = Instant::now();
        let mut lanes = lanes(10, 8);
        for offset in 0..3 {
            lanes.push(record(0, offset), now);
        }
        assert_eq!(lanes.push(record(0, 1), now), Admission::Duplicate);
        assert_eq!(lanes.push(record(0, 2), now), Admission::Duplicate);
        lanes.push(record(0, 3), now);
        lanes.cut_expired(now + Duration::from_secs(1));
        let (_, batch) = lanes.next_delivery().unwrap();
        assert_eq!(offsets(&batch), vec![0, 1, 2, 3]);
    }

    #[test]
    fn windows_cut_each_partition_on_its_own_time() {
        let start = Instant::now();
        let mut lanes = lanes(100, 8);
        lanes.push(record(0, 0), start);
        lanes.push(record(1, 0), start + Duration::from_millis(60));
        assert_eq!(
            lanes.next_window_end(),
            Some(start + Duration::from_millis(100))
        );
        assert_eq!(lanes.cut_expired(start + Duration::from_millis(100)), 1);
        assert_eq!(lanes.next_delivery().unwrap().0.1, 0);
        assert!(lanes.next_delivery().is_none());
        assert_eq!(lanes.cut_expired(start + Duration::from_millis(160)), 1);
        assert_eq!(lanes.next_delivery().unwrap().0.1, 1);
        assert_eq!(lanes.next_window_end(), None);
    }

    #[test]
    fn idle_only_when_nothing_is_buffered_queued_or_in_flight() {
        let now = Instant::now();
        let mut lanes = lanes(2, 8);
        assert!(lanes.is_idle());
        lanes.push(record(0, 0), now);
        assert!(!lanes.is_idle(), "buffered");
        lanes.cut_expired(now + Duration::from_secs(1));
        assert!(!lanes.is_idle(), "queued");
        let (key, _) = lanes.next_delivery().unwrap();
        assert!(!lanes.is_idle(), "in flight");
        lanes.finished(&key);
        assert!(lanes.is_idle());
    }
}
