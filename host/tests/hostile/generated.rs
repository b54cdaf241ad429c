//! Test analyzers made here, byte by byte, rather than built from a guest crate: a component
//! one byte over the host's size limit, one that takes longer than the host's compile budget,
//! and a good analyzer padded to just under the size limit.
//!
//! Input: the example analyzer `syn-no-answer` (a good component, from the test analyzers'
//! folder). Output: `.wasm` files under Cargo's per-test temporary folder
//! (`CARGO_TARGET_TMPDIR/hostile-generated/`), written once per test process; they are the same
//! bytes every time, and each is written under a temporary name and renamed into place, so test
//! binaries that run at once never see half a file.
//!
//! - `oversized-component`: `syn-no-answer` with a custom section that makes the file
//!   16 MiB + 1 byte. Custom sections are legal anywhere in a component, so only its size is
//!   wrong.
//! - `slow-compile`: a component holding one core module whose one function nests
//!   [`SLOW_DEPTH`] loops around [`SLOW_LOCALS`] `i64` locals that every level changes.
//!   Cranelift gives each loop header a block parameter per live local, and its time grows
//!   much faster than the function: these 32 KB take Cranelift about 12 s and ~100 MiB on the
//!   2-core test machine, far over the host's 5 s compile budget. It has no analyzer exports:
//!   the host refuses it for its compile time before it ever looks at them.
//! - `near-limit-analyzer`: `syn-no-answer` padded to exactly 16 MiB, the largest component
//!   the host loads; it must load and run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::test_analyzer;

/// The host's limit on a component's size (`MAX_COMPONENT_BYTES`, README: "component size").
pub const COMPONENT_LIMIT: usize = 16 << 20;

/// The good analyzer every padded file is made from, and its analyzer name.
pub const GOOD: &str = "syn-no-answer";

/// Nesting depth of the slow function's loops.
const SLOW_DEPTH: usize = 1800;
/// `i64` locals the slow function changes at every level.
const SLOW_LOCALS: u32 = 10;

/// Every analyzer this module makes.
pub const NAMES: [&str; 3] = ["oversized-component", "slow-compile", "near-limit-analyzer"];

/// The path of generated analyzer `name` (one of [`NAMES`]), made on first use.
pub fn path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    assert!(NAMES.contains(&name), "{name} is not a generated analyzer");
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-generated");
        std::fs::create_dir_all(&dir).expect("creating the generated analyzers' folder");
        let good = std::fs::read(test_analyzer(GOOD)).expect("reading the good analyzer");
        write(&dir, "oversized-component", &padded(&good, COMPONENT_LIMIT + 1));
        write(&dir, "slow-compile", &slow_compile());
        write(&dir, "near-limit-analyzer", &padded(&good, COMPONENT_LIMIT));
        dir
    })
    .join(format!("{name}.wasm"))
}

/// Writes `bytes` to `dir/name.wasm` through a temporary name, unless it is already there.
fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(format!("{name}.wasm"));
    if std::fs::read(&path).is_ok_and(|b| b == bytes) {
        return;
    }
    let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("renaming {}: {e}", path.display()));
}

/// `n` as unsigned LEB128.
fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A section: its id, its size, its contents.
fn section(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(leb(payload.len()));
    out.extend_from_slice(payload);
    out
}

/// `component` with a custom section (`wasmtap-padding`) appended that makes it exactly `total`
/// bytes long.
pub fn padded(component: &[u8], total: usize) -> Vec<u8> {
    const NAME: &[u8] = b"wasmtap-padding";
    let head = leb(NAME.len()).len() + NAME.len();
    for size_len in 1..=5 {
        let Some(payload) = total.checked_sub(component.len() + 1 + size_len) else { break };
        if leb(payload).len() != size_len || payload < head {
            continue;
        }
        let mut body = leb(NAME.len());
        body.extend_from_slice(NAME);
        body.resize(payload, 0);
        let mut out = component.to_vec();
        out.extend(section(0, &body));
        assert_eq!(out.len(), total);
        return out;
    }
    panic!("cannot pad {} bytes to {total}", component.len());
}

/// The slow-to-compile component (see the module docs).
fn slow_compile() -> Vec<u8> {
    // Deterministic local indices (a 64-bit LCG, Knuth's MMIX constants).
    let mut state = 0x5eed_u64;
    let mut local = || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) % u64::from(SLOW_LOCALS)) as usize
    };
    const LOCAL_GET: u8 = 0x20;
    const LOCAL_SET: u8 = 0x21;
    let mut body = Vec::new();
    body.extend(leb(1)); // one group of locals:
    body.extend(leb(SLOW_LOCALS as usize));
    body.push(0x7e); // i64
    for _ in 0..SLOW_DEPTH {
        body.extend([0x03, 0x40]); // loop (no result)
        // local[d] = (local[a] + local[b]) * local[c]
        let (a, b, c, d) = (local(), local(), local(), local());
        body.push(LOCAL_GET);
        body.extend(leb(a));
        body.push(LOCAL_GET);
        body.extend(leb(b));
        body.push(0x7c); // i64.add
        body.push(LOCAL_GET);
        body.extend(leb(c));
        body.push(0x7e); // i64.mul
        body.push(LOCAL_SET);
        body.extend(leb(d));
    }
    for _ in 0..SLOW_DEPTH {
        // br_if 0 (back to this loop's header) while (i32.wrap local[a]) != 0; end
        body.push(LOCAL_GET);
        body.extend(leb(local()));
        body.extend([0xa7, 0x0d, 0x00, 0x0b]); // i32.wrap_i64, br_if 0, end
    }
    for j in 0..SLOW_LOCALS as usize {
        // memory[8j] = local[j]: every local is used, so none of the work is dead.
        body.extend([0x41, 0x00]); // i32.const 0
        body.push(LOCAL_GET);
        body.extend(leb(j));
        body.extend([0x37, 0x03]); // i64.store align=8
        body.extend(leb(8 * j));
    }
    body.push(0x0b); // end
    let mut code = leb(1);
    code.extend(leb(body.len()));
    code.extend(body);

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend(section(1, &[1, 0x60, 0, 0])); // types: () -> ()
    module.extend(section(3, &[1, 0])); // one function of type 0
    module.extend(section(5, &[1, 0, 1])); // one memory, min 1 page
    module.extend(section(7, &[1, 1, b'f', 0, 0])); // export "f" = function 0
    module.extend(section(10, &code));
    // A component (layer 1, version 0xd) holding the module and one instance of it.
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    component.extend(section(1, &module));
    component.extend(section(2, &[1, 0, 0, 0])); // core instance: instantiate module 0, no args
    component
}
