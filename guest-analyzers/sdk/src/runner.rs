//! The runner: drives an [`Analyzer`] the way the host does, converting between the WIT types
//! and the SDK's.
//!
//! Input: the three calls of the `analyzer` interface (`init` with a config, `process` with
//! batch bytes, `tick` with packet time). Output: the WIT `analyzer-info` and the aggregated
//! updates, packed into the bytes the host reads (or read back as WIT `metric-update` lists,
//! for tests), or an error string. [`crate::export_analyzer!`] wraps one `Runner` per
//! component instance; native tests use it directly to see exactly what the host would receive.

use crate::bindings::wasmtap::analyzer::types as wit;
use crate::{Analyzer, Batch, Config, Updates};

/// Series held at most while the host lets an analyzer hold its updates: one returned list
/// stays far below the host's limit of updates per call, and the accumulator small.
pub const HOLD_MAX_SERIES: usize = 32_768;

/// An analyzer after a successful `init`, with its reusable accumulator.
struct Loaded<A> {
    analyzer: A,
    updates: Updates,
}

/// Holds one analyzer instance between calls.
///
/// ```
/// use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, BatchBuilder, Config, Counter, PacketFields, Runner, Updates};
///
/// struct Count(Counter);
/// impl Analyzer for Count {
///     fn init(_: &Config) -> Result<(Self, AnalyzerInfo), String> {
///         let mut info = AnalyzerInfo::new("count", "0.1.0");
///         let c = info.counter("things_total", "Things.", &[]);
///         Ok((Count(c), info))
///     }
///     fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
///         out.add(self.0, &[], batch.len() as f64);
///         Ok(())
///     }
/// }
///
/// let mut runner = Runner::<Count>::new();
/// runner.init(Config::default())?;
/// let batch = BatchBuilder::new().push(&PacketFields::default()).build();
/// assert_eq!(runner.process(&batch)?.len(), 1);
/// # Ok::<(), String>(())
/// ```
pub struct Runner<A> {
    loaded: Option<Loaded<A>>,
}

impl<A> Default for Runner<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> Runner<A> {
    /// A runner before `init`.
    pub const fn new() -> Self {
        Self { loaded: None }
    }

    /// The analyzer, once initialised (for tests that inspect its state).
    pub fn analyzer(&self) -> Option<&A> {
        self.loaded.as_ref().map(|l| &l.analyzer)
    }
}

impl<A: Analyzer> Runner<A> {
    /// Initialises (or re-initialises) the analyzer and returns its declared families.
    pub fn init(&mut self, config: Config) -> Result<wit::AnalyzerInfo, String> {
        self.loaded = None;
        let (analyzer, info) = A::init(&config)?;
        info.validate().map_err(|e| format!("analyzer {:?}: {e}", info.name()))?;
        let updates = Updates::new(&info);
        self.loaded = Some(Loaded { analyzer, updates });
        Ok(info.to_wit())
    }

    fn loaded(&mut self, call: &str) -> Result<&mut Loaded<A>, String> {
        self.loaded.as_mut().ok_or_else(|| format!("{call} called before a successful init"))
    }

    /// Parses the batch, runs [`Analyzer::process`] and returns the updates packed as the host
    /// reads them, after [`Analyzer::flush`] whenever they are returned.
    ///
    /// For an analyzer with [`Analyzer::HOLD_UPDATES`], while the host sets
    /// [`crate::header_flags::HOLD`] on its batches, the updates are held
    /// (and none returned) until a batch without it, a tick, or until
    /// [`HOLD_MAX_SERIES`] series are held: a busy analyzer then returns one update per series
    /// every few hundred batches instead of every batch. An error is returned at once, and the
    /// held updates with it are discarded.
    pub fn process_packed(&mut self, batch: &[u8]) -> Result<Vec<u8>, String> {
        let loaded = self.loaded("process")?;
        let batch = match Batch::parse(batch) {
            Ok(b) => b,
            Err(e) => {
                loaded.updates.clear();
                return Err(e.to_string());
            }
        };
        let result = loaded.analyzer.process(&batch, &mut loaded.updates);
        let updates = &loaded.updates;
        if A::HOLD_UPDATES
            && result.is_ok()
            && batch.may_hold()
            && !updates.failed()
            && updates.len() < HOLD_MAX_SERIES
        {
            return Ok(none());
        }
        let result = result.and_then(|()| loaded.analyzer.flush(&mut loaded.updates));
        finish(result, &mut loaded.updates)
    }

    /// Runs [`Analyzer::tick`] and [`Analyzer::flush`] and returns their updates with any held
    /// ones, packed as the host reads them.
    pub fn tick_packed(&mut self, now_ns: u64, end_of_capture: bool) -> Result<Vec<u8>, String> {
        let loaded = self.loaded("tick")?;
        let result = loaded
            .analyzer
            .tick(now_ns, end_of_capture, &mut loaded.updates)
            .and_then(|()| loaded.analyzer.flush(&mut loaded.updates));
        finish(result, &mut loaded.updates)
    }

    /// [`Runner::process_packed`], with the updates read back as WIT records: what the host
    /// would receive, for tests.
    pub fn process(&mut self, batch: &[u8]) -> Result<Vec<wit::MetricUpdate>, String> {
        crate::packed::decode(&self.process_packed(batch)?)
    }

    /// [`Runner::tick_packed`], with the updates read back as WIT records, for tests.
    pub fn tick(
        &mut self,
        now_ns: u64,
        end_of_capture: bool,
    ) -> Result<Vec<wit::MetricUpdate>, String> {
        crate::packed::decode(&self.tick_packed(now_ns, end_of_capture)?)
    }
}

/// No updates, packed.
fn none() -> Vec<u8> {
    crate::packed::encode(&[])
}

/// Drains `updates`, or discards them if the analyzer failed.
fn finish(result: Result<(), String>, updates: &mut Updates) -> Result<Vec<u8>, String> {
    match result {
        Ok(()) => updates.finish_packed(),
        Err(e) => {
            updates.clear();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnalyzerInfo, BatchBuilder, Counter, PacketFields};

    /// Counts packets per device; fails on a batch with device 666; emits on tick.
    struct Probe {
        packets: Counter,
        ticks: Counter,
    }

    impl Analyzer for Probe {
        const HOLD_UPDATES: bool = true;

        fn init(config: &Config) -> Result<(Self, AnalyzerInfo), String> {
            if config.get("fail") == Some("yes") {
                return Err("asked to fail".to_owned());
            }
            let mut info = AnalyzerInfo::new("probe", "1.0.0");
            let packets = info.counter("probe_packets_total", "Packets.", &["device"]);
            let ticks = info.counter("probe_ticks_total", "Ticks.", &[]);
            Ok((Self { packets, ticks }, info))
        }

        fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
            for p in batch {
                out.inc(self.packets, &[p.device_label()]);
                if p.device() == 666 {
                    return Err("bad device".to_owned());
                }
            }
            Ok(())
        }

        fn tick(&mut self, _now: u64, end: bool, out: &mut Updates) -> Result<(), String> {
            out.add(self.ticks, &[], if end { 10.0 } else { 1.0 });
            Ok(())
        }
    }

    #[test]
    fn calls_before_init_fail() {
        let mut r = Runner::<Probe>::new();
        assert!(r.process(&BatchBuilder::new().build()).is_err());
        assert!(r.tick(0, false).is_err());
        let cfg = Config::new(vec![("fail".to_owned(), "yes".to_owned())]);
        assert_eq!(r.init(cfg).err(), Some("asked to fail".to_owned()));
        assert!(r.analyzer().is_none());
    }

    #[test]
    fn process_and_tick_round_trip() {
        let mut r = Runner::<Probe>::new();
        let info = r.init(Config::default()).expect("init");
        assert_eq!(info.families.len(), 2);
        assert_eq!(info.version, "1.0.0");

        let mut b = BatchBuilder::new();
        b.push(&PacketFields::default().with_device(1));
        b.push(&PacketFields::default().with_device(2));
        b.push(&PacketFields::default().with_device(1));
        let out = r.process(&b.build()).expect("process");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, wit::UpdateValue::CounterAdd(2.0));
        assert_eq!(out[0].labels, vec![wit::LabelValue::Device(1)]);

        assert_eq!(r.tick(5, true).expect("tick")[0].value, wit::UpdateValue::CounterAdd(10.0));
        assert!(r.process(&[0; 3]).expect_err("short").contains("16-byte header"));
    }

    #[test]
    fn a_failed_call_drops_its_partial_updates() {
        let mut r = Runner::<Probe>::new();
        r.init(Config::default()).expect("init");
        let mut b = BatchBuilder::new();
        b.push(&PacketFields::default().with_device(1));
        b.push(&PacketFields::default().with_device(666));
        assert_eq!(r.process(&b.build()).err(), Some("bad device".to_owned()));
        let ok = BatchBuilder::new().push(&PacketFields::default().with_device(3)).build();
        let out = r.process(&ok).expect("process");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels, vec![wit::LabelValue::Device(3)]);
        assert_eq!(out[0].value, wit::UpdateValue::CounterAdd(1.0));
    }

    fn batch(devices: &[u16], hold: bool) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for d in devices {
            b.push(&PacketFields::default().with_device(*d));
        }
        b.hold(hold).build()
    }

    fn counts(out: &[wit::MetricUpdate]) -> Vec<(wit::LabelValue, wit::UpdateValue)> {
        out.iter().map(|u| (u.labels[0].clone(), u.value.clone())).collect()
    }

    #[test]
    fn held_updates_come_back_summed_with_the_next_call_that_may_not_hold() {
        let mut r = Runner::<Probe>::new();
        r.init(Config::default()).expect("init");
        assert_eq!(r.process(&batch(&[1, 2], true)).expect("held"), vec![]);
        assert_eq!(r.process(&batch(&[2, 3], true)).expect("held"), vec![]);
        let out = r.process(&batch(&[1], false)).expect("flush");
        let (d, c) = (wit::LabelValue::Device, wit::UpdateValue::CounterAdd);
        assert_eq!(counts(&out), vec![(d(1), c(2.0)), (d(2), c(2.0)), (d(3), c(1.0))]);
        // An empty batch without the flag returns what is held, and nothing twice.
        assert_eq!(r.process(&batch(&[], false)).expect("empty"), vec![]);
        assert_eq!(r.process(&batch(&[4], true)).expect("held"), vec![]);
        let empty = r.process(&batch(&[], false)).expect("flush");
        assert_eq!(counts(&empty), vec![(d(4), c(1.0))]);
    }

    #[test]
    fn a_tick_returns_held_updates() {
        let mut r = Runner::<Probe>::new();
        r.init(Config::default()).expect("init");
        assert_eq!(r.process(&batch(&[7, 7], true)).expect("held"), vec![]);
        let out = r.tick(1, false).expect("tick");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels, vec![wit::LabelValue::Device(7)]);
        assert_eq!(out[0].value, wit::UpdateValue::CounterAdd(2.0));
        assert_eq!(out[1].value, wit::UpdateValue::CounterAdd(1.0));
    }

    #[test]
    fn an_error_discards_the_held_updates_with_its_own() {
        let mut r = Runner::<Probe>::new();
        r.init(Config::default()).expect("init");
        assert_eq!(r.process(&batch(&[1], true)).expect("held"), vec![]);
        assert_eq!(r.process(&batch(&[666], true)).err(), Some("bad device".to_owned()));
        let out = r.process(&batch(&[2], false)).expect("flush");
        assert_eq!(
            counts(&out),
            vec![(wit::LabelValue::Device(2), wit::UpdateValue::CounterAdd(1.0))]
        );
    }

    #[test]
    fn at_most_hold_max_series_are_held() {
        let mut r = Runner::<Probe>::new();
        r.init(Config::default()).expect("init");
        // From 1000 up: device 666 is the probe's failure.
        let devices: Vec<u16> = (1000..1000 + HOLD_MAX_SERIES as u16 - 1).collect();
        assert_eq!(r.process(&batch(&devices, true)).expect("held"), vec![]);
        let out = r.process(&batch(&[u16::MAX], true)).expect("full");
        assert_eq!(out.len(), HOLD_MAX_SERIES, "the call that reaches the limit returns all");
        assert_eq!(r.process(&batch(&[], false)).expect("nothing left"), vec![]);
    }

    /// Counts packets; keeps the default of returning its updates every call.
    struct Plain(Counter);

    impl Analyzer for Plain {
        fn init(_: &Config) -> Result<(Self, AnalyzerInfo), String> {
            let mut info = AnalyzerInfo::new("plain", "1.0.0");
            let c = info.counter("plain_packets_total", "Packets.", &[]);
            Ok((Plain(c), info))
        }
        fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
            out.add(self.0, &[], batch.len() as f64);
            Ok(())
        }
    }

    #[test]
    fn an_analyzer_that_does_not_opt_in_returns_its_updates_every_call() {
        let mut r = Runner::<Plain>::new();
        r.init(Config::default()).expect("init");
        let out = r.process(&batch(&[1, 2], true)).expect("process");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, wit::UpdateValue::CounterAdd(2.0));
    }
    /// Counts packets in its own map and emits them only from `flush`.
    struct Own {
        packets: Counter,
        own: crate::LabelMap<1, u32>,
    }

    impl Analyzer for Own {
        const HOLD_UPDATES: bool = true;

        fn init(_: &Config) -> Result<(Self, AnalyzerInfo), String> {
            let mut info = AnalyzerInfo::new("own", "1.0.0");
            let packets = info.counter("own_packets_total", "Packets.", &["device"]);
            Ok((Own { packets, own: crate::LabelMap::new() }, info))
        }
        fn process(&mut self, batch: &Batch<'_>, _: &mut Updates) -> Result<(), String> {
            for p in batch {
                *self.own.entry([p.device_label()]) += 1;
            }
            Ok(())
        }
        fn flush(&mut self, out: &mut Updates) -> Result<(), String> {
            for ([device], n) in self.own.drain() {
                out.add(self.packets, &[device], f64::from(n));
            }
            Ok(())
        }
    }

    #[test]
    fn flush_runs_whenever_the_updates_are_returned_and_only_then() {
        let mut r = Runner::<Own>::new();
        r.init(Config::default()).expect("init");
        let (d, c) = (wit::LabelValue::Device, wit::UpdateValue::CounterAdd);
        assert_eq!(r.process(&batch(&[1, 2, 1], true)).expect("held"), vec![]);
        assert_eq!(r.analyzer().map(|a| a.own.len()), Some(2), "not flushed while held");
        let out = r.process(&batch(&[2], false)).expect("returned");
        assert_eq!(counts(&out), vec![(d(1), c(2.0)), (d(2), c(2.0))]);
        assert_eq!(r.process(&batch(&[3], true)).expect("held"), vec![]);
        assert_eq!(counts(&r.tick(1, false).expect("tick")), vec![(d(3), c(1.0))]);
        assert_eq!(r.tick(2, true).expect("tick"), vec![]);
    }
}
