//! The most bytes a record batch may take on a topic — `sink.kafka.max_message_bytes`,
//! else what the broker says (DescribeConfigs: the topic's `max.message.bytes`, else the
//! controller's `message.max.bytes`), else 1 MiB — and what a refusal teaches: a broker
//! that answers "too large" to a request within the limit halves it.

use super::retry::{classify, Class};
use crate::config::kafka::{KafkaConfig, MIN_MESSAGE_BYTES};
use rskafka::client::controller::ConfigResourceType;
use rskafka::client::error::Error as ClientError;
use rskafka::client::error::RequestError;
use rskafka::client::Client;
use rskafka::record::RECORD_BATCH_OVERHEAD;

/// The limit when neither the config nor the broker gives one: Kafka's default
/// `message.max.bytes` (1 MiB + 12) rounded down.
pub const FALLBACK_MESSAGE_BYTES: usize = 1024 * 1024;

const TOPIC_KEY: &str = "max.message.bytes";
const BROKER_KEY: &str = "message.max.bytes";

/// Where a topic's limit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Config,
    Topic,
    Broker,
    /// The broker gave none: why.
    Fallback(String),
    /// The broker refused a request of this many bytes as too large.
    Refused(usize),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Config => write!(f, "sink.kafka.max_message_bytes"),
            Source::Topic => write!(f, "the topic's {TOPIC_KEY}"),
            Source::Broker => write!(f, "the broker's {BROKER_KEY}"),
            Source::Fallback(why) => write!(f, "the default, {why}"),
            Source::Refused(bytes) => write!(f, "half a refused request of {bytes} bytes"),
        }
    }
}

/// A topic's limit: the most bytes of one record batch (header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub bytes: usize,
    pub source: Source,
}

impl Limit {
    /// The most bytes of records one request may carry: the limit or `max_batch_bytes`,
    /// whichever is less, less the record batch's header.
    pub fn records_bytes(bytes: usize, config: &KafkaConfig) -> usize {
        bytes
            .min(config.max_batch_bytes as usize)
            .saturating_sub(RECORD_BATCH_OVERHEAD)
            .max(1)
    }

    /// The limit after the broker refused a request of `refused` bytes (record batch
    /// header included) as too large, though it was within `asked` (the broker's answer
    /// now): the broker's answer if it is lower (lowered meanwhile), else half the refused
    /// request, never below `MIN_MESSAGE_BYTES`. `None` when that cannot make the request
    /// smaller.
    pub fn after_refusal(asked: Limit, refused: usize) -> Option<Limit> {
        if asked.bytes < refused {
            return Some(asked);
        }
        let min = MIN_MESSAGE_BYTES as usize;
        (refused > min).then(|| Limit {
            bytes: (refused / 2).max(min),
            source: Source::Refused(refused),
        })
    }
}

/// A size the broker gave as text.
fn parse(value: Option<&str>) -> Option<usize> {
    value?
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&bytes| bytes > 0)
}

/// The limit of `topic` from the config or the broker. `Err` only with an error worth
/// retrying (the connection, an answer late); a broker without DescribeConfigs, or one
/// that refuses to describe, leaves the default, with why in [`Source::Fallback`].
pub async fn learn(
    config: &KafkaConfig,
    client: &Client,
    topic: &str,
) -> Result<Limit, ClientError> {
    if config.max_message_bytes != 0 {
        return Ok(Limit {
            bytes: config.max_message_bytes as usize,
            source: Source::Config,
        });
    }
    let fallback = |why: String| Limit {
        bytes: FALLBACK_MESSAGE_BYTES,
        source: Source::Fallback(why),
    };
    let controller = client.controller_client()?;
    // Every key, filtered here: tansu 0.6 cannot read a list of keys (versions 0-3).
    let asked = controller
        .describe_configs(ConfigResourceType::Topic, topic, None)
        .await;
    let topic_value = match asked {
        Ok(entries) => value_of(&entries, TOPIC_KEY),
        Err(ClientError::Request(RequestError::NoVersionMatch { .. })) => {
            return Ok(fallback(
                "the broker does not support DescribeConfigs".into(),
            ))
        }
        Err(e) if classify(&e) == Class::Retry => return Err(e),
        Err(e) => return Ok(fallback(format!("the broker refused DescribeConfigs: {e}"))),
    };
    if let Some(bytes) = parse(topic_value.as_deref()) {
        return Ok(Limit {
            bytes,
            source: Source::Topic,
        });
    }
    let id = controller.controller_id().await?;
    let asked = controller
        .describe_configs(ConfigResourceType::Broker, id.to_string(), None)
        .await;
    match asked {
        Ok(entries) => Ok(match parse(value_of(&entries, BROKER_KEY).as_deref()) {
            Some(bytes) => Limit {
                bytes,
                source: Source::Broker,
            },
            None => fallback(format!(
                "the broker named neither {TOPIC_KEY} nor {BROKER_KEY}"
            )),
        }),
        Err(e) if classify(&e) == Class::Retry => Err(e),
        Err(e) => Ok(fallback(format!("the broker refused DescribeConfigs: {e}"))),
    }
}

fn value_of(entries: &[(String, Option<String>)], key: &str) -> Option<String> {
    entries
        .iter()
        .find(|(name, _)| name == key)
        .and_then(|(_, value)| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_bytes_should_be_the_lesser_limit_less_the_batch_header() {
        let config = KafkaConfig::default();
        assert_eq!(Limit::records_bytes(4096, &config), 4096 - 61);
        assert_eq!(Limit::records_bytes(8 << 20, &config), (1 << 20) - 61);
        assert_eq!(Limit::records_bytes(10, &config), 1, "never 0");
    }

    #[test]
    fn a_refusal_should_take_the_brokers_lower_limit_or_halve_the_request() {
        let asked = |bytes| Limit {
            bytes,
            source: Source::Topic,
        };
        // Lowered meanwhile: the broker's new answer.
        assert_eq!(Limit::after_refusal(asked(4096), 9000), Some(asked(4096)));
        // The broker says it fits but refused it: half of what it refused.
        let halved = Limit::after_refusal(asked(1 << 20), 9000).expect("smaller");
        assert_eq!((halved.bytes, halved.source), (4500, Source::Refused(9000)));
        // Never below the least a record's headers need; at it, nothing smaller to try.
        assert_eq!(
            Limit::after_refusal(asked(1 << 20), 1500).map(|l| l.bytes),
            Some(1024)
        );
        assert_eq!(Limit::after_refusal(asked(1 << 20), 1024), None);
    }

    #[test]
    fn parse_should_take_only_a_positive_number_of_bytes() {
        assert_eq!(parse(Some("1048588")), Some(1_048_588));
        assert_eq!(parse(Some(" 2048 ")), Some(2048));
        for bad in [None, Some(""), Some("0"), Some("-1"), Some("1MiB")] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
