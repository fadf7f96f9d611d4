//! Invoking the function with an event: in this process (the library's [`Consumer`]) or over the
//! Lambda invoke API of a local emulator (`cargo lambda watch` running the real `consumer` binary).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use kafka_esm::consumer::Consumer;
use kafka_esm::handler::{InvocationInfo, RecordHandler};
use kafka_esm::response::{KafkaBatchResponse, parse_function_answer};
use kafka_esm::retry::Deadline;

/// What the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The invocation succeeded; its body, when it was a Kafka batch response.
    Success(Option<KafkaBatchResponse>),
    /// The invocation failed (a function error, a timeout, or the function could not be reached).
    Failed {
        /// Lambda's `errorType`, or what went wrong around the call.
        error_type: String,
        /// The error message.
        message: String,
    },
}

impl Answer {
    fn failed(error_type: &str, message: impl Into<String>) -> Self {
        Self::Failed {
            error_type: error_type.to_owned(),
            message: message.into(),
        }
    }
}

/// Something that runs the function on an event.
#[async_trait]
pub trait Invoke: Send + Sync {
    /// The function's name (for the on-failure record's ARN).
    fn function_name(&self) -> &str;

    /// Invokes the function synchronously with `event` (the ESM JSON).
    async fn invoke(&self, event: &str, request_id: &str) -> Answer;
}

#[async_trait]
impl<T: Invoke + ?Sized> Invoke for Box<T> {
    fn function_name(&self) -> &str {
        (**self).function_name()
    }

    async fn invoke(&self, event: &str, request_id: &str) -> Answer {
        (**self).invoke(event, request_id).await
    }
}

/// The consumer of this library, invoked in this process with the function timeout as its deadline.
pub struct InProcess<H> {
    consumer: Consumer<H>,
    function_name: String,
    timeout: Duration,
    safety_margin: Duration,
}

impl<H: RecordHandler> InProcess<H> {
    /// Invokes `consumer` as `function_name`, giving each invocation `timeout` (less
    /// `safety_margin` for answering, as on Lambda).
    pub fn new(
        consumer: Consumer<H>,
        function_name: impl Into<String>,
        timeout: Duration,
        safety_margin: Duration,
    ) -> Self {
        Self {
            consumer,
            function_name: function_name.into(),
            timeout,
            safety_margin,
        }
    }

    /// The consumer.
    pub fn consumer(&self) -> &Consumer<H> {
        &self.consumer
    }
}

#[async_trait]
impl<H: RecordHandler> Invoke for InProcess<H> {
    fn function_name(&self) -> &str {
        &self.function_name
    }

    async fn invoke(&self, event: &str, request_id: &str) -> Answer {
        let info = InvocationInfo::new(
            request_id,
            self.function_name.clone(),
            Deadline::after(self.timeout, self.safety_margin),
        );
        let invocation =
            match tokio::time::timeout(self.timeout, self.consumer.invoke(event, &info)).await {
                Ok(invocation) => invocation,
                Err(_) => {
                    return Answer::failed(
                        "Sandbox.Timedout",
                        format!("the invocation did not answer within {:?}", self.timeout),
                    );
                }
            };
        match invocation.result {
            // Through the wire format, as the ESM reads it: the two can never disagree.
            Ok(response) => match serde_json::to_vec(&response) {
                Ok(body) => parse_answer(200, false, &body),
                Err(e) => Answer::failed("Runtime.SerializationError", e.to_string()),
            },
            Err(error) => Answer::failed(error.error_type(), error.to_string()),
        }
    }
}

/// A function behind the Lambda invoke API (`POST /2015-03-31/functions/<name>/invocations`), as
/// `cargo lambda watch` serves it.
pub struct RuntimeApi {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    function_name: String,
    timeout: Duration,
}

impl RuntimeApi {
    /// Invokes `function_name` at `endpoint` (`http://127.0.0.1:9000`), waiting at most `timeout`
    /// for each answer.
    pub fn new(endpoint: &str, function_name: impl Into<String>, timeout: Duration) -> Self {
        let function_name = function_name.into();
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: format!(
                "{}/2015-03-31/functions/{function_name}/invocations",
                endpoint.trim_end_matches('/')
            ),
            function_name,
            timeout,
        }
    }

    async fn call(&self, event: &str) -> Result<(u16, bool, Bytes), String> {
        let request = hyper::Request::post(&self.url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(event.as_bytes())))
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| {
            format!(
                "{} did not answer: {e} (is `cargo lambda watch` running?)",
                self.url
            )
        })?;
        let status = response.status().as_u16();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", self.url))?
            .to_bytes();
        Ok((status, function_error, body))
    }
}

#[async_trait]
impl Invoke for RuntimeApi {
    fn function_name(&self) -> &str {
        &self.function_name
    }

    async fn invoke(&self, event: &str, _request_id: &str) -> Answer {
        match tokio::time::timeout(self.timeout, self.call(event)).await {
            Err(_) => Answer::failed(
                "Sandbox.Timedout",
                format!("no answer from {} within {:?}", self.url, self.timeout),
            ),
            Ok(Err(message)) => Answer::failed("InvokeError", message),
            Ok(Ok((status, function_error, body))) => parse_answer(status, function_error, &body),
        }
    }
}

/// The meaning of an invoke API answer: a function error when the status is not 2xx, when
/// `X-Amz-Function-Error` is set, or when the body is Lambda's error payload.
pub fn parse_answer(status: u16, function_error: bool, body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    struct ErrorPayload {
        #[serde(rename = "errorType", default)]
        error_type: Option<String>,
        #[serde(rename = "errorMessage", default)]
        error_message: Option<String>,
    }
    let error = serde_json::from_slice::<ErrorPayload>(body)
        .ok()
        .filter(|e| e.error_type.is_some() || e.error_message.is_some());
    if !(200..300).contains(&status) || function_error || error.is_some() {
        let (error_type, message) = match error {
            Some(e) => (
                e.error_type.unwrap_or_else(|| "Unhandled".into()),
                e.error_message.unwrap_or_default(),
            ),
            None => (
                format!("HTTP {status}"),
                String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            ),
        };
        return Answer::Failed {
            error_type,
            message,
        };
    }
    match parse_function_answer(body) {
        Ok(response) => Answer::Success(response),
        // The ESM treats an answer it cannot read as a failure of the whole batch.
        Err(invalid) => Answer::failed(INVALID_RESPONSE, invalid.to_string()),
    }
}

/// The error type `esm poll` gives an answer that is not a valid partial batch response.
pub const INVALID_RESPONSE: &str = "InvalidBatchItemFailures";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_success_partial_and_error_answers() {
        assert_eq!(
            parse_answer(200, false, br#"{"batchItemFailures":[]}"#),
            Answer::Success(Some(KafkaBatchResponse::default()))
        );
        assert_eq!(parse_answer(200, false, b"null"), Answer::Success(None));
        assert_eq!(parse_answer(200, false, b"\"ok\""), Answer::Success(None));
        let partial =
            br#"{"batchItemFailures":[{"itemIdentifier":{"partition":"t-1","offset":7}}]}"#;
        let Answer::Success(Some(response)) = parse_answer(200, false, partial) else {
            panic!("a partial batch response")
        };
        assert_eq!(response.batch_item_failures[0].item_identifier.offset, 7);
        // The key this project wrongly wrote before: the ESM cannot read it.
        let wrong =
            br#"{"batchItemFailures":[{"itemIdentifier":{"topic-partition":"t-1","offset":7}}]}"#;
        assert!(matches!(
            parse_answer(200, false, wrong),
            Answer::Failed { error_type, .. } if error_type == INVALID_RESPONSE
        ));
        let failed =
            br#"{"errorType":"UnfinishedRecords","errorMessage":"2 of 5 records are unfinished"}"#;
        assert_eq!(
            parse_answer(200, true, failed),
            Answer::failed("UnfinishedRecords", "2 of 5 records are unfinished")
        );
        // cargo lambda reports the function's error payload even without the header.
        assert!(matches!(
            parse_answer(200, false, failed),
            Answer::Failed { .. }
        ));
        assert_eq!(
            parse_answer(502, false, b"bad gateway"),
            Answer::failed("HTTP 502", "bad gateway")
        );
    }
}
