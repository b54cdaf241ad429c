//! Registry stage, housekeeping: what the registry does on its own, beside the updates.
//!
//! Input: the registry's families and series.
//! Outputs: expired series removed on a thread of the registry's own ([`Expiry`]), and the
//! series counts per family as self-metrics, computed at every render ([`SeriesCounts`]).

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::Registry;

/// How often expired series are looked for: a series leaves within this after its TTL.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Removes expired series on a thread of its own (it takes each family's lock in turn), so
/// the work neither waits on nor holds the HTTP runtime.
pub struct Expiry {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Expiry {
    pub fn start(registry: Arc<Registry>) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new().name("expiry".into()).spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(EXPIRE_EVERY)
            {
                let n = registry.expire();
                if n > 0 {
                    tracing::debug!(series = n, "expired");
                }
            }
        })?;
        Ok(Self { stop, thread })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the expiry thread panicked");
        }
    }
}

/// `wasmtap_host_series{family}` and `wasmtap_host_series_refused_total{family}`, read from
/// the registry at every render: only the families registered then, so an unloaded
/// analyzer's go with it.
pub struct SeriesCounts {
    registry: Arc<Registry>,
    live: IntGaugeVec,
    refused: IntCounterVec,
}

impl SeriesCounts {
    pub fn new(registry: Arc<Registry>) -> prometheus::Result<Self> {
        let live = IntGaugeVec::new(
            Opts::new("wasmtap_host_series", "Live series per metric family."),
            &["family"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "wasmtap_host_series_refused_total",
                "Updates refused: new series over the family's cap or the analyzer's exposition \
                 budget, or a total that would overflow.",
            ),
            &["family"],
        )?;
        Ok(Self { registry, live, refused })
    }
}

impl Collector for SeriesCounts {
    fn desc(&self) -> Vec<&Desc> {
        self.live.desc().into_iter().chain(self.refused.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.live.reset();
        self.refused.reset();
        for (family, live, refused) in self.registry.series_counts() {
            self.live.with_label_values(&[&family]).set(i64::try_from(live).unwrap_or(i64::MAX));
            self.refused.with_label_values(&[&family]).inc_by(refused);
        }
        self.live.collect().into_iter().chain(self.refused.collect()).collect()
    }
}
