//! Every refusal at load names the rule it enforces (issue 22, acceptance point 3): each
//! [`LoadError`] and each bound an analyzer's name, version and updates are held to
//! ([`Exceeded`]), listed with the words of the rule that its message must state. The rules of
//! declared families and of updates are listed in the registry's unit tests
//! (`every_declaration_error_names_its_rule`, `every_update_error_names_its_rule`), and the
//! SDK's in `validate_names_the_rule_it_enforces`.
//!
//! Inputs: nothing but the host's library. Outputs: pass/fail.

use std::time::Duration;

use host::registry::{FamilyError, Reserved};
use host::runtime::LoadError;
use host::runtime::bounds::{self, Exceeded};

#[test]
fn every_load_error_names_its_rule() {
    let abi = host::runtime::ABI_VERSION;
    let rules: Vec<(LoadError, String)> = vec![
        (LoadError::NotWasm, "not a WebAssembly file (no \\0asm header)".into()),
        (
            LoadError::CoreModule,
            format!("not a component: the host loads components of wasmtap:analyzer@{abi}"),
        ),
        (
            LoadError::WrongVersion { found: "0.2.0".into() },
            format!(
                "built for wasmtap:analyzer@0.2.0, but this host speaks wasmtap:analyzer@{abi}"
            ),
        ),
        (
            LoadError::ForbiddenImport(vec!["wasi:filesystem/types@0.2.6".into()]),
            format!("which analyzers may not use: the only import is wasmtap:analyzer/host@{abi}"),
        ),
        (LoadError::MissingExport, "is it built for the analyzer-component world?".into()),
        (
            LoadError::TooBig { limit: bounds::MAX_COMPONENT_BYTES },
            format!(
                "is larger than {} bytes, the limit for a component",
                bounds::MAX_COMPONENT_BYTES
            ),
        ),
        (
            LoadError::TooSlow(bounds::COMPILE_BUDGET),
            "took over 5s to compile, the limit for compiling a component".into(),
        ),
        (
            LoadError::Bounds(Exceeded::Name("Bad Name".into())),
            format!("does not match [a-z][a-z0-9_-]* of at most {} bytes", bounds::MAX_NAME),
        ),
        (
            LoadError::Bounds(Exceeded::Version("1\n2".into())),
            format!(
                "is over {} bytes or has characters other than printable ASCII",
                bounds::MAX_VERSION
            ),
        ),
        (
            LoadError::Family(FamilyError::ReservedLabel {
                name: "h_seconds".into(),
                label: "le".into(),
                why: Reserved::BucketBound,
            }),
            "label name \"le\" is reserved: Prometheus uses \"le\" for the bounds of histogram \
             buckets"
                .into(),
        ),
    ];
    for (error, rule) in rules {
        let text = error.to_string();
        assert!(text.contains(&rule), "{error:?}: {text:?} does not state the rule {rule:?}");
    }
    assert_eq!(bounds::COMPILE_BUDGET, Duration::from_secs(5), "the rule above quotes 5s");
}

#[test]
fn every_update_bound_names_its_limit() {
    let rules = [
        (
            Exceeded::LabelValue { got: bounds::MAX_LABEL_VALUE + 1 },
            format!("over the limit of {}", bounds::MAX_LABEL_VALUE),
        ),
        (
            Exceeded::CallBytes { got: bounds::MAX_CALL_BYTES + 1 },
            format!("bytes of updates in one call, over the limit of {}", bounds::MAX_CALL_BYTES),
        ),
    ];
    for (error, rule) in rules {
        let text = error.to_string();
        assert!(text.contains(&rule), "{error:?}: {text:?} does not state the rule {rule:?}");
    }
}
