//! The Kafka sink's one retry policy: [`classify`] sorts rskafka's errors into retry,
//! permanent and fatal (as rskafka's own `maybe_retry` sorts them into
//! `ControlFlow::Continue` and `Break`), and [`Backoff`] spaces the attempts of every
//! loop that retries alike: connecting, metadata and produce requests.
//!
//! rskafka retries inside one request too (its `BackoffConfig`, connect.rs): that is
//! bounded by `request_timeout` and serves as the request's deadline; what happens after
//! it is decided here.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rskafka::client::error::{Error as ClientError, ProtocolError};
use std::time::Duration;

/// What a failed request calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// It may succeed later (a broker down or restarting, a leader moving, a topic
    /// created meanwhile, no answer in time): the same request again after the
    /// [`Backoff`] delay, on a fresh connection.
    Retry,
    /// This request can never succeed (an unknown topic, records too large or invalid,
    /// the topic not authorized): its batches are rejected; their tailers show why in
    /// `/status` and restart with backoff, other topics go on.
    Permanent,
    /// The broker refuses the sink itself (its SASL credentials, its authorization on
    /// the cluster) or the sink's own TLS or SASL files are unusable: nothing succeeds
    /// until the operator fixes them. A request's batches are rejected as for
    /// `Permanent`; connecting keeps trying, logging it as an error (each attempt reads
    /// the files again, so a fixed file heals without a restart).
    Fatal,
}

impl Class {
    /// The `kind` label of `logcatch_send_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Class::Retry => "retryable",
            Class::Permanent | Class::Fatal => "permanent",
        }
    }
}

/// The class of an rskafka error: the one place that decides what is retried.
pub fn classify(error: &ClientError) -> Class {
    use ProtocolError as P;
    match error {
        ClientError::ServerError { protocol_error, .. } => match protocol_error {
            P::UnknownTopicOrPartition
            | P::MessageTooLarge
            | P::RecordListTooLarge
            | P::InvalidTopicException
            | P::InvalidRecord
            | P::TopicAuthorizationFailed
            | P::UnsupportedCompressionType => Class::Permanent,
            P::SaslAuthenticationFailed | P::ClusterAuthorizationFailed => Class::Fatal,
            // Created meanwhile (by another agent): its metadata is asked for again.
            P::TopicAlreadyExists => Class::Retry,
            // Leader elections, replicas catching up, a broker loading or throttling.
            _ => Class::Retry,
        },
        // A broken or refused connection (TLS and SASL refusals come wrapped in it),
        // a request's I/O, an answer rskafka could not read, rskafka's deadline.
        _ => Class::Retry,
    }
}

/// The first delay after a failure.
const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest delay before jitter (with it, up to twice as long).
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The delays between the attempts of a failed request: from 100 ms, doubling up to 5 s,
/// each lengthened by up to as much again at random (so that agents restarted together
/// do not retry together). It never gives up: meanwhile the in-flight budget holds the
/// data and reading pauses. A new `Backoff` for each request that fails.
pub struct Backoff(ExponentialBackoff);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(
            ExponentialBuilder::default()
                .with_min_delay(MIN_DELAY)
                .with_max_delay(MAX_DELAY)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }
}

impl Backoff {
    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on the attempts there is always a next one.
        self.0.next().unwrap_or(MAX_DELAY)
    }
}

/// A broker's answer `protocol_error` to a request about partition 0 of topic `t`.
#[cfg(test)]
pub fn server_error(protocol_error: ProtocolError) -> ClientError {
    ClientError::ServerError {
        protocol_error,
        error_message: Some("from the broker".into()),
        request: rskafka::client::error::RequestContext::Partition("t".into(), 0),
        response: None,
        is_virtual: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::client::error::RequestError;
    use rskafka::{BackoffError, ConnectionError};
    use std::sync::Arc;

    #[test]
    fn classify_should_sort_each_kind_of_error_into_its_class() {
        use ProtocolError as P;
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let deadline = || BackoffError::DeadlineExceded {
            deadline: Duration::from_secs(30),
            source: Box::new(io()),
        };
        let table = [
            // What retrying can fix: the connection, the request, rskafka's deadline.
            (
                ClientError::Connection(ConnectionError::RetryFailed(deadline())),
                Class::Retry,
            ),
            (
                ClientError::Connection(ConnectionError::Metadata(RequestError::IO(io()))),
                Class::Retry,
            ),
            (ClientError::Request(RequestError::IO(io())), Class::Retry),
            (
                ClientError::Request(RequestError::Poisoned(Arc::new(RequestError::IO(io())))),
                Class::Retry,
            ),
            (ClientError::RetryFailed(deadline()), Class::Retry),
            (ClientError::InvalidResponse("garbled".into()), Class::Retry),
            (ClientError::Timeout, Class::Retry),
        ];
        for (error, class) in table {
            assert_eq!(classify(&error), class, "{error}");
        }
        // The broker's answers, by class.
        let answers = [
            (
                Class::Retry,
                &[
                    P::LeaderNotAvailable,
                    P::NotLeaderOrFollower,
                    P::NotEnoughReplicas,
                    P::RequestTimedOut,
                    P::NetworkException,
                    P::TopicAlreadyExists,
                ][..],
            ),
            // What no retry of the same request can fix.
            (
                Class::Permanent,
                &[
                    P::UnknownTopicOrPartition,
                    P::MessageTooLarge,
                    P::RecordListTooLarge,
                    P::InvalidTopicException,
                    P::InvalidRecord,
                    P::TopicAuthorizationFailed,
                    P::UnsupportedCompressionType,
                ],
            ),
            // What only the operator can fix, for every request of the sink.
            (
                Class::Fatal,
                &[P::SaslAuthenticationFailed, P::ClusterAuthorizationFailed],
            ),
        ];
        for (class, answers) in answers {
            for answer in answers {
                assert_eq!(classify(&server_error(*answer)), class, "{answer}");
            }
        }
    }

    #[test]
    fn only_retry_should_count_as_retryable_in_the_metrics() {
        assert_eq!(Class::Retry.label(), "retryable");
        assert_eq!(Class::Permanent.label(), "permanent");
        assert_eq!(Class::Fatal.label(), "permanent");
    }

    #[test]
    fn backoff_should_double_from_100ms_to_5s_with_jitter_and_never_give_up() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..1_000).map(|_| backoff.next_delay()).collect();
        // Each delay is its step (100 ms, 200 ms, ... up to 5 s) plus up to as much again.
        let mut step = MIN_DELAY;
        for (attempt, delay) in delays.iter().enumerate() {
            assert!(
                step <= *delay && *delay <= step * 2,
                "attempt {attempt}: {delay:?} outside {step:?}..={:?}",
                step * 2
            );
            step = (step * 2).min(MAX_DELAY);
        }
        assert!(delays[100..].iter().all(|delay| *delay >= MAX_DELAY));
    }
}
