//! Pipelined publishes: a record's messages are queued while it is handled, and the processor waits
//! for the acknowledgements of a whole chunk of records at once.
//!
//! The processor runs each handler call inside [`collecting_acks`], which gives the call a place
//! (a tokio task-local) for the acknowledgements of what it publishes with [`publish_pipelined`].
//! After the chunk's records have run, [`settle`] awaits them all together. So a chunk of 100
//! records that publish costs one acknowledgement wait, not 100, while records still run one after
//! the other in offset order and their messages are sent in that order.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;

use super::{MessageSink, OutboundMessage, PendingAck, SinkError};

tokio::task_local! {
    /// The acknowledgements of the record being handled, when a processor collects them.
    static RECORD_ACKS: RefCell<Vec<PendingAck>>;
}

/// Publishes `message` as part of the side effect of the record being handled.
///
/// Called by a [`crate::handler::RecordHandler`] run by a [`crate::processor::Processor`] (on the
/// handler call's own task), it queues the message and returns at once: the processor waits for
/// the acknowledgements of the chunk's records together, and marks a record done only once every
/// message it published this way is acknowledged. A message whose acknowledgement fails sends its
/// record through [`crate::handler::RecordHandler::resume`] again, which looks for what landed and
/// publishes what is missing. Called anywhere else (a spawned task, a test calling the handler
/// directly) it waits for the acknowledgement itself, as [`MessageSink::publish`] does.
///
/// Messages are written in the order they are sent, so the records of a partition that publish
/// under one key keep their order (the idempotent producer keeps it per partition). An `Err` means
/// the message was not even queued: return it as a transient failure.
pub async fn publish_pipelined(
    sink: &dyn MessageSink,
    message: OutboundMessage,
    timeout: Duration,
) -> Result<(), SinkError> {
    let mut ack = Some(sink.send(message, timeout).await?);
    // Inside a processor's handler call, the processor awaits it; `ack` is then taken.
    let _ = RECORD_ACKS.try_with(|acks| acks.borrow_mut().extend(ack.take()));
    match ack {
        None => Ok(()),
        Some(ack) => ack.await.map(drop),
    }
}

/// Runs `work` (a handler call) with a place for the acknowledgements of what it publishes with
/// [`publish_pipelined`], and returns them with its output, still to be awaited.
pub(crate) async fn collecting_acks<F: Future>(work: F) -> (F::Output, Vec<PendingAck>) {
    RECORD_ACKS
        .scope(RefCell::new(Vec::new()), async move {
            let output = work.await;
            (output, RECORD_ACKS.with(|acks| acks.take()))
        })
        .await
}

/// Awaits the acknowledgements of several records together: per record, `Ok` once all of its
/// messages are acknowledged, else the first of its failures.
pub(crate) async fn settle(records: Vec<Vec<PendingAck>>) -> Vec<Result<(), SinkError>> {
    join_all(records.into_iter().map(|acks| async move {
        join_all(acks)
            .await
            .into_iter()
            .try_for_each(|ack| ack.map(drop))
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    fn message(id: &str) -> OutboundMessage {
        OutboundMessage {
            topic: "out".into(),
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        }
        .with_message_id(id)
    }

    #[tokio::test]
    async fn inside_a_collection_the_ack_is_handed_back_not_awaited() {
        let sink = MemorySink::new();
        let (result, acks) = collecting_acks(async {
            publish_pipelined(&sink, message("a"), Duration::from_secs(1)).await?;
            publish_pipelined(&sink, message("b"), Duration::from_secs(1)).await
        })
        .await;
        result.unwrap();
        assert_eq!(acks.len(), 2);
        assert_eq!(settle(vec![acks, Vec::new()]).await, vec![Ok(()), Ok(())]);
        assert_eq!(sink.len(), 2);
    }

    #[tokio::test]
    async fn outside_a_collection_it_waits_for_its_ack() {
        let sink = MemorySink::new();
        publish_pipelined(&sink, message("a"), Duration::from_secs(1))
            .await
            .unwrap();
        sink.fail_next_acks(1);
        let error = publish_pipelined(&sink, message("b"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(error.message.contains("acknowledgement"), "{error}");
    }

    #[tokio::test]
    async fn a_record_fails_with_the_first_of_its_failed_acks() {
        let sink = MemorySink::new();
        let (_, first) = collecting_acks(async {
            publish_pipelined(&sink, message("a"), Duration::from_secs(1)).await
        })
        .await;
        sink.fail_next_acks(1);
        let (_, second) = collecting_acks(async {
            publish_pipelined(&sink, message("b"), Duration::from_secs(1)).await?;
            publish_pipelined(&sink, message("c"), Duration::from_secs(1)).await
        })
        .await;
        let settled = settle(vec![first, second]).await;
        assert_eq!(settled[0], Ok(()));
        assert!(settled[1].is_err());
        assert_eq!(sink.len(), 2, "the message whose ack failed is not stored");
    }
}
