//! Embedded mode: librdkafka's mock cluster (`rdkafka::mocking::MockCluster`) running in this
//! process on a real loopback port. Any Kafka client can produce to it while switchyard runs.
//! The cluster lives on its own thread (it is not `Send`) until this handle is dropped.

use std::sync::mpsc;

use rdkafka::mocking::MockCluster;

use super::KafkaSetupError;

pub struct EmbeddedKafka {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster and creates `topics` with `partitions` each.
    pub fn start(topics: &[String], partitions: i32) -> Result<EmbeddedKafka, KafkaSetupError> {
        let topics: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), partitions)).collect();
        Self::start_with(&topics)
    }

    /// As [`start`](Self::start), with a partition count per topic. The mock cluster keeps only
    /// about 5 MB of records per partition (older message sets are dropped, the low watermark
    /// moves): size partitions to the data (the load-test harness does).
    pub fn start_with(topics: &[(String, i32)]) -> Result<EmbeddedKafka, KafkaSetupError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for (t, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(t, *partitions, 1) {
                        let _ = ready_tx.send(Err(format!("topic {t}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| KafkaSetupError::Embedded(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|e| KafkaSetupError::Embedded(e.to_string()))?
            .map_err(KafkaSetupError::Embedded)?;
        Ok(EmbeddedKafka {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
