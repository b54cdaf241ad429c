//! The `wrong-wit-version` hostile test analyzer: a well-behaved analyzer built against
//! `wasmtap:analyzer@0.1.0`, the released contract before updates were packed into bytes, as an
//! analyzer built with the 0.1.0 SDK is.
//!
//! Input: batches. Output: `test_wrong_version_packets_total{device}`, if a host of version
//! 0.1.0 ran it. Its bindings come straight from wit-bindgen and this crate's own `wit/`, the
//! 0.1.0 contract as released. The host must refuse it at load with a message naming both
//! versions and saying to rebuild with the SDK of the host. Not a default analyzer.

/// Bindings generated from `wit/analyzer.wit` (version 0.1.0).
#[allow(missing_docs, unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "analyzer-component",
        additional_derives: [PartialEq, Clone],
    });
}

use bindings::exports::wasmtap::analyzer::analyzer::Guest;
use bindings::wasmtap::analyzer::host::log;
use bindings::wasmtap::analyzer::types::{
    AnalyzerInfo, Config, LabelValue, LogLevel, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};

/// Offset of the device index in a record of batch layout 1 (see the WIT).
const DEVICE_OFFSET: usize = 84;
/// Length of the batch header.
const HEADER_LEN: usize = 16;

/// Counts packets per batch (of the first record's device), against the 0.1.0 contract.
pub struct WrongWitVersion;

impl Guest for WrongWitVersion {
    fn init(_config: Config) -> Result<AnalyzerInfo, String> {
        log(LogLevel::Info, "wrong-wit-version: built for wasmtap:analyzer@0.1.0");
        Ok(AnalyzerInfo {
            name: "wrong-wit-version".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            families: vec![MetricFamily {
                name: "test_wrong_version_packets_total".to_owned(),
                help: "Packets seen by an analyzer built for another WIT version.".to_owned(),
                kind: MetricKind::Counter,
                label_names: vec!["device".to_owned()],
                buckets: Vec::new(),
            }],
        })
    }

    fn process(batch: Vec<u8>) -> Result<Vec<MetricUpdate>, String> {
        Ok(count(&batch).into_iter().collect())
    }

    fn tick(_now_ns: u64, _end_of_capture: bool) -> Result<Vec<MetricUpdate>, String> {
        Ok(Vec::new())
    }
}

/// One update: the batch's record count under the first record's device.
fn count(batch: &[u8]) -> Option<MetricUpdate> {
    let header = batch.get(..HEADER_LEN)?;
    let stride = u16::from_le_bytes([header[2], header[3]]);
    let records = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let at = HEADER_LEN + DEVICE_OFFSET;
    let device = batch.get(at..at + 2).map(|d| u16::from_le_bytes([d[0], d[1]]))?;
    (stride > 0 && records > 0).then(|| MetricUpdate {
        family: 0,
        labels: vec![LabelValue::Device(device)],
        value: UpdateValue::CounterAdd(f64::from(records)),
    })
}

// The export glue is `unsafe` (raw pointers across the ABI); it is generated, not written here.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{WrongWitVersion, bindings};
    bindings::export!(WrongWitVersion with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy is the 0.1.0 contract: updates as records, not bytes; the host speaks a later one.
    #[test]
    fn the_wit_copy_is_the_released_0_1_0_contract() {
        let copy = include_str!("../wit/analyzer.wit");
        let real = include_str!("../../../../wit/analyzer.wit");
        assert!(copy.contains("package wasmtap:analyzer@0.1.0;"));
        assert!(copy.contains("result<list<metric-update>, string>"));
        assert!(!real.contains("package wasmtap:analyzer@0.1.0;"));
    }

    #[test]
    fn counts_the_records_of_a_batch() {
        let mut batch = vec![0u8; HEADER_LEN + 2 * 96];
        batch[..8].copy_from_slice(&[1, 0, 96, 0, 2, 0, 0, 0]);
        batch[HEADER_LEN + DEVICE_OFFSET] = 5;
        let u = count(&batch).expect("an update");
        assert_eq!(u.labels, vec![LabelValue::Device(5)]);
        assert_eq!(u.value, UpdateValue::CounterAdd(2.0));
    }
}
