//! A drop-in analyzer from nothing, with the host alone (issue 22, acceptance points 1 and 2):
//! in an empty folder outside the repository, with only an installed `wasmtap` and a Rust
//! toolchain, `wasmtap new synack-ports`, its unit test, a change of about 20 lines (SYN-ACKs
//! per server port, and a histogram of their windows), `wasmtap build`, `wasmtap check` and
//! `wasmtap replay --analyzer`, whose numbers must equal tshark's. The cold and warm times of
//! `wasmtap build` are printed (the README quotes them).
//!
//! Inputs: the built `wasmtap` binary, copied into a temporary `bin/` (the install); the guest
//! SDK of this source tree (`wasmtap new`'s default); `cargo` and `rustc` with the
//! `wasm32-unknown-unknown` target; crates.io, or the registry cache of the `CARGO_HOME` in
//! force, for the SDK's dependencies; tshark; the sample capture and one written here. A missing
//! tool or target fails the test with the command that installs it. Outputs: pass/fail, the
//! timings on stderr.
//!
//! The expected numbers come from tshark alone: per source port, the frames matching
//! `tcp.flags.syn==1 && tcp.flags.ack==1`, and their `tcp.window_size_value` binned into the
//! analyzer's buckets.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::frames::{ACK, Pcap, RST, SYN, TcpSegment};
use common::*;

/// A cold `wasmtap build` compiles the SDK's dependencies (wit-bindgen's macros among them):
/// about a minute and a half on 2 cores, so this is room for a loaded machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// The analyzer's name, and so its crate's folder, package and component.
const NAME: &str = "synack-ports";

/// The families after the change, with the host's prefix.
const SYN_ACKS: &str = "wasmtap_synack_ports_syn_acks_total";
const WINDOWS: &str = "wasmtap_synack_ports_syn_ack_window_bytes";

/// The window histogram's bucket bounds, as the change declares them.
const WINDOW_BUCKETS: [u32; 5] = [1024, 8192, 29200, 64240, 65535];

/// The change a user makes to the generated `src/lib.rs`: (what `wasmtap new` wrote, what it
/// becomes). SYN-ACKs counted per server (source) port, their windows in a histogram without
/// labels.
const CHANGE: &[(&str, &str)] = &[
    (
        "Counter, Histogram, Updates};",
        "Counter, Histogram, Label, Updates};\n\n\
         /// Bucket bounds of the SYN-ACK windows: small, Linux's first windows, the largest.\n\
         const WINDOW_BUCKETS: [f64; 5] = [1024.0, 8192.0, 29200.0, 64240.0, 65535.0];",
    ),
    (
        "\"synack_ports_tcp_segments_total\",\n            \"TCP segments, per device.\",\n            &[\"device\"],",
        "\"synack_ports_syn_acks_total\",\n            \"SYN-ACKs, per server (source) port.\",\n            &[\"port\"],",
    ),
    (
        "\"synack_ports_tcp_payload_bytes\",\n            \"TCP payload length of each segment, per device.\",\n            &[\"device\"],\n            &PAYLOAD_BUCKETS,",
        "\"synack_ports_syn_ack_window_bytes\",\n            \"The window of each SYN-ACK, unscaled.\",\n            &[],\n            &WINDOW_BUCKETS,",
    ),
    (
        "            if !p.has_tcp() {\n                continue;\n            }",
        "            if !(p.has_tcp() && p.syn() && p.ack()) {\n                continue;\n            }",
    ),
    (
        "            let labels = [p.device_label()];\n            out.inc(self.segments, &labels);\n            out.observe(self.payload, &labels, f64::from(p.payload_len()));",
        "            out.inc(self.segments, &[Label::Number(i64::from(p.src_port()))]);\n            out.observe(self.payload, &[], f64::from(p.window()));",
    ),
];

/// A second, smaller change for the warm build: the counter's help text.
const WARM_CHANGE: (&str, &str) =
    ("\"SYN-ACKs, per server (source) port.\"", "\"SYN-ACKs (SYN and ACK set), per source port.\"");

/// `CARGO_*` variables that configure cargo itself (home, network, registries, terminal) and
/// reach the user's cargo; every other `CARGO_*` variable describes this test's own build
/// (`CARGO_TARGET_DIR` among them) and is removed, as are the compiler flags and wrappers.
const KEPT_CARGO_VARS: &[&str] = &[
    "CARGO_HOME",
    "CARGO_NET_",
    "CARGO_HTTP_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_TERM_",
];
const STRIPPED_VARS: &[&str] = &[
    "CARGO",
    "RUSTC",
    "RUSTDOC",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "MAKEFLAGS",
    "MFLAGS",
];

/// A user's shell: `wasmtap` installed in `bin/`, first on `PATH`, and the environment of a
/// terminal rather than of this test's cargo.
struct User {
    bin: PathBuf,
}

impl User {
    /// Installs the built `wasmtap` into `root/bin`.
    fn install(root: &Path) -> User {
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("create bin/");
        std::fs::copy(HOST, bin.join("wasmtap")).expect("copy the wasmtap binary");
        User { bin }
    }

    /// `program args...` run in `cwd` as the user would.
    fn command(&self, program: &str, args: &[&str], cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(cwd);
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let cargo_var =
                key.starts_with("CARGO_") && !KEPT_CARGO_VARS.iter().any(|k| key.starts_with(k));
            if cargo_var || key.starts_with("__CARGO") || STRIPPED_VARS.contains(&key) {
                cmd.env_remove(key);
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(self.bin.clone()).chain(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).expect("a valid PATH"));
        cmd
    }

    /// `wasmtap args...` in `cwd`: its result, asserted successful, and how long it took.
    fn wasmtap(&self, args: &[&str], cwd: &Path, timeout: Duration) -> (RunResult, Duration) {
        let t0 = Instant::now();
        let r = run_with_timeout(&mut self.command("wasmtap", args, cwd), timeout);
        let took = t0.elapsed();
        assert_no_panic(&r, &format!("wasmtap {}", args.join(" ")));
        assert!(
            r.success(),
            "wasmtap {} in {} failed: {}",
            args.join(" "),
            cwd.display(),
            r.describe()
        );
        (r, took)
    }
}

/// Fails, with the command that installs it, when the wasm target is missing.
fn require_wasm_target() {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-unknown-unknown"])
        .output()
        .expect("run rustc");
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let installed = std::fs::read_dir(&libdir)
        .map(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        })
        .unwrap_or(false);
    assert!(
        out.status.success() && installed,
        "the wasm32-unknown-unknown target is not installed: run rustup target add wasm32-unknown-unknown"
    );
}

/// Applies `(old, new)` to `text`, each `old` exactly once.
fn apply(text: &str, change: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (old, new) in change {
        assert_eq!(
            out.matches(old).count(),
            1,
            "the generated lib.rs has {old:?} not once:\n{out}"
        );
        out = out.replacen(old, new, 1);
    }
    out
}

/// (lines added, lines removed) from `before` to `after`, as a diff counts them (lines
/// compared as a multiset, which is enough for a change that moves nothing).
fn changed_lines(before: &str, after: &str) -> (usize, usize) {
    fn count(text: &str) -> BTreeMap<&str, i64> {
        let mut m = BTreeMap::new();
        for l in text.lines() {
            *m.entry(l).or_insert(0) += 1;
        }
        m
    }
    let (b, a) = (count(before), count(after));
    let keys: std::collections::BTreeSet<&str> = b.keys().chain(a.keys()).copied().collect();
    let (mut added, mut removed) = (0, 0);
    for k in keys {
        let diff = a.get(k).unwrap_or(&0) - b.get(k).unwrap_or(&0);
        if diff > 0 {
            added += diff as usize;
        } else {
            removed += diff.unsigned_abs() as usize;
        }
    }
    (added, removed)
}

/// What tshark reads in `capture`: SYN-ACKs per source port, and their windows' histogram as
/// (cumulative count per bucket bound, then +Inf), sum.
struct Expected {
    per_port: BTreeMap<u16, u64>,
    buckets: Vec<u64>,
    sum: u64,
}

fn expected_from_tshark(capture: &Path) -> Expected {
    let rows = tshark_fields(
        capture,
        Some("tcp.flags.syn==1 && tcp.flags.ack==1"),
        &["tcp.srcport", "tcp.window_size_value"],
    );
    let mut e =
        Expected { per_port: BTreeMap::new(), buckets: vec![0; WINDOW_BUCKETS.len() + 1], sum: 0 };
    for row in &rows {
        let port: u16 = row[0].parse().unwrap_or_else(|err| panic!("tcp.srcport {row:?}: {err}"));
        let window: u32 = row[1].parse().unwrap_or_else(|err| panic!("window {row:?}: {err}"));
        *e.per_port.entry(port).or_insert(0) += 1;
        for (i, bound) in WINDOW_BUCKETS.iter().enumerate() {
            if window <= *bound {
                e.buckets[i] += 1;
            }
        }
        e.buckets[WINDOW_BUCKETS.len()] += 1;
        e.sum += u64::from(window);
    }
    e
}

/// The same numbers from the analyzer's exposition.
fn from_exposition(text: &str) -> Expected {
    let samples = parse_exposition(text);
    let mut e = Expected { per_port: BTreeMap::new(), buckets: Vec::new(), sum: 0 };
    for s in samples.iter().filter(|s| s.name == SYN_ACKS) {
        let port = s.labels.get("port").unwrap_or_else(|| panic!("{SYN_ACKS} without port: {s:?}"));
        let port: u16 = port.parse().unwrap_or_else(|err| panic!("port {port:?}: {err}"));
        e.per_port.insert(port, as_count(s.value, SYN_ACKS));
    }
    let bucket = |le: &str| {
        value_of(&samples, &format!("{WINDOWS}_bucket"), &[("le", le)])
            .map_or(0, |v| as_count(v, WINDOWS))
    };
    e.buckets = WINDOW_BUCKETS.iter().map(|b| bucket(&b.to_string())).collect();
    e.buckets.push(bucket("+Inf"));
    let count =
        value_of(&samples, &format!("{WINDOWS}_count"), &[]).map_or(0, |v| as_count(v, WINDOWS));
    assert_eq!(count, e.buckets[WINDOW_BUCKETS.len()], "{WINDOWS}_count is not its +Inf bucket");
    e.sum = value_of(&samples, &format!("{WINDOWS}_sum"), &[]).map_or(0, |v| as_count(v, WINDOWS));
    e
}

/// A capture with SYN-ACKs from many server ports (IPv4 and IPv6) and windows across every
/// bucket, among SYNs, plain ACKs and RST-ACKs that must not count.
fn write_synthetic(path: &Path) {
    let client4: IpAddr = "10.22.0.1".parse().expect("an address");
    let server4: IpAddr = "10.22.0.2".parse().expect("an address");
    let client6: IpAddr = "fd22::1".parse().expect("an address");
    let server6: IpAddr = "fd22::2".parse().expect("an address");
    let ports = [22u16, 80, 443, 5432, 6443, 8080];
    let windows = [0u16, 1, 1024, 1025, 8192, 29200, 29201, 64240, 65160, 65535];
    let mut pcap = Pcap::create(path);
    let mut t = 1_700_000_000_000_000u64;
    for (i, port) in ports.iter().enumerate() {
        for (j, window) in windows.iter().enumerate().skip(i % 3) {
            let (client, server) = if j % 2 == 0 { (client4, server4) } else { (client6, server6) };
            let sport = 40_000 + (i * 100 + j) as u16;
            let syn = TcpSegment {
                seq: 1000,
                flags: SYN,
                ..TcpSegment::new(client, sport, server, *port)
            };
            let synack = TcpSegment {
                seq: 5000,
                ack: 1001,
                flags: SYN | ACK,
                window: *window,
                ..TcpSegment::new(server, *port, client, sport)
            };
            let ack = TcpSegment {
                seq: 1001,
                ack: 5001,
                flags: ACK,
                ..TcpSegment::new(client, sport, server, *port)
            };
            for segment in [&syn, &synack, &ack] {
                pcap.write_segment(t, segment);
                t += 100;
            }
        }
        let refused = TcpSegment {
            seq: 0,
            ack: 1001,
            flags: RST | ACK,
            ..TcpSegment::new(server4, *port, client4, 39_000)
        };
        pcap.write_segment(t, &refused);
        t += 100;
    }
    pcap.finish();
}

#[test]
fn a_new_analyzer_from_nothing_to_tshark() {
    require_tools(&["tshark", "cargo", "rustc"]);
    require_wasm_target();
    let root = TempDir::new("new-analyzer");
    let user = User::install(root.path());
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("create the work folder");

    // 1. The crate, as `wasmtap new` makes it, and its unit test (with a target folder of its
    //    own, so that the build below starts cold).
    let (r, _) = user.wasmtap(&["new", NAME], &work, REPLAY_TIMEOUT);
    let krate = work.join(NAME);
    assert!(r.stdout_text().contains("wasmtap build"), "{}", r.describe());
    for file in ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"] {
        assert!(krate.join(file).is_file(), "wasmtap new wrote no {file}");
    }
    let test_target = root.join("test-target");
    let mut test = user.command("cargo", &["test", "--target-dir"], &krate);
    test.arg(&test_target);
    let t0 = Instant::now();
    let r = run_with_timeout(&mut test, BUILD_TIMEOUT);
    assert!(r.success(), "cargo test in the new crate failed: {}", r.describe());
    assert!(r.stdout_text().contains("test result: ok. 1 passed"), "{}", r.describe());
    let test_time = t0.elapsed();

    // 2. The change.
    let lib = krate.join("src/lib.rs");
    let before = std::fs::read_to_string(&lib).expect("read lib.rs");
    let after = apply(&before, CHANGE);
    let (added, removed) = changed_lines(&before, &after);
    assert!(added <= 20, "the change adds {added} lines, not about 20");
    std::fs::write(&lib, &after).expect("write lib.rs");

    // 3. Build (cold: a fresh target folder), check, and build again after a small edit (warm).
    let (r, cold) = user.wasmtap(&["build"], &krate, BUILD_TIMEOUT);
    let component = PathBuf::from(r.stdout_text().trim());
    assert_eq!(
        component,
        krate.join("target/wasmtap").join(format!("{NAME}.wasm")),
        "{}",
        r.describe()
    );
    let (r, _) =
        user.wasmtap(&["check", component.to_str().expect("UTF-8")], &work, REPLAY_TIMEOUT);
    let report = r.stdout_text();
    assert_eq!(report.lines().last(), Some("PASS"), "{report}");
    assert!(report.contains(SYN_ACKS) && report.contains(WINDOWS), "{report}");
    std::fs::write(&lib, apply(&after, &[WARM_CHANGE])).expect("write lib.rs");
    let (_, warm) = user.wasmtap(&["build"], &krate, BUILD_TIMEOUT);

    // 4. Replays, against tshark.
    let synthetic = root.join("synack-synthetic.pcap");
    write_synthetic(&synthetic);
    for capture in [sample_capture(), synthetic] {
        let expected = expected_from_tshark(&capture);
        assert!(expected.per_port.len() >= 2, "{} has too few SYN-ACKs to test", capture.display());
        let cap = capture.to_str().expect("UTF-8");
        let wasm = component.to_str().expect("UTF-8");
        let args = ["replay", cap, "--analyzer", wasm, "--no-default-analyzers"];
        let (r, _) = user.wasmtap(&args, &work, REPLAY_TIMEOUT);
        let got = from_exposition(&r.stdout_text());
        let name = capture.file_name().map(OsStr::to_string_lossy).unwrap_or_default();
        assert_eq!(got.per_port, expected.per_port, "{name}: SYN-ACKs per port, host vs tshark");
        assert_eq!(got.buckets, expected.buckets, "{name}: window buckets, host vs tshark");
        assert_eq!(got.sum, expected.sum, "{name}: window sum, host vs tshark");
    }

    // Straight to the process's stderr, so that the times show whether or not libtest
    // captures output.
    let _ = writeln!(
        std::io::stderr(),
        "\nwasmtap new -> build timings: cargo test of the new crate {:.1} s (fresh target); \
         wasmtap build cold {:.1} s (fresh target folder), warm {:.1} s (after a one-line \
         edit); the change added {added} lines and removed {removed}",
        test_time.as_secs_f64(),
        cold.as_secs_f64(),
        warm.as_secs_f64()
    );
}

#[test]
fn build_names_the_command_that_adds_a_missing_wasm_target() {
    let root = TempDir::new("new-analyzer-no-target");
    let user = User::install(root.path());
    // A rustc whose target folder holds no core library, as one without the target answers.
    let fake = root.join("bin/rustc");
    std::fs::write(&fake, "#!/bin/sh\necho /nonexistent/lib/rustlib/wasm32-unknown-unknown/lib\n")
        .expect("write the fake rustc");
    let chmod = Command::new("chmod").arg("+x").arg(&fake).status().expect("chmod");
    assert!(chmod.success());
    let krate = root.join("crate");
    std::fs::create_dir_all(&krate).expect("create the crate folder");
    std::fs::write(krate.join("Cargo.toml"), "[package]\nname = \"x\"\n")
        .expect("write Cargo.toml");
    let r = run_with_timeout(&mut user.command("wasmtap", &["build"], &krate), REPLAY_TIMEOUT);
    assert!(!r.success(), "{}", r.describe());
    assert!(
        r.stderr_text().contains(
            "the wasm32-unknown-unknown target is not installed: run rustup target add wasm32-unknown-unknown"
        ),
        "{}",
        r.describe()
    );
}

#[test]
fn new_refuses_a_bad_name_and_a_folder_in_use() {
    let root = TempDir::new("new-analyzer-refusals");
    let user = User::install(root.path());
    let cases: [(&[&str], &str); 3] = [
        (&["new", "Bad.Name"], "an analyzer's name is [a-z][a-z0-9_-]* of at most 64 bytes"),
        (&["new", "traffic"], "taken by a built-in analyzer"),
        (&["new", "x", "--sdk", "/nonexistent/sdk"], "--sdk /nonexistent/sdk"),
    ];
    for (args, rule) in cases {
        let r = run_with_timeout(&mut user.command("wasmtap", args, root.path()), REPLAY_TIMEOUT);
        assert!(!r.success() && r.stderr_text().contains(rule), "{args:?}: {}", r.describe());
    }
    std::fs::create_dir_all(root.join("used")).expect("create a folder");
    std::fs::write(root.join("used/keep"), "").expect("write a file");
    let r = run_with_timeout(
        &mut user.command("wasmtap", &["new", "used"], root.path()),
        REPLAY_TIMEOUT,
    );
    assert!(!r.success() && r.stderr_text().contains("is not an empty folder"), "{}", r.describe());
    assert!(root.join("used/keep").is_file(), "the folder in use was changed");
}

/// The SDK as a git dependency, the form for a crate away from any clone: cargo resolves the
/// manifest `wasmtap new --sdk git+URL#REV` writes, and the SDK it checks out holds its WIT.
#[test]
fn the_sdk_resolves_as_a_git_dependency() {
    require_tools(&["cargo", "git"]);
    let root = TempDir::new("new-analyzer-git");
    let user = User::install(root.path());
    let repo = repo_root();
    let head = run_ok(
        Command::new("git").arg("-C").arg(&repo).args(["rev-parse", "HEAD"]),
        REPLAY_TIMEOUT,
    );
    let sdk = format!("git+file://{}#{}", repo.display(), head.trim());
    user.wasmtap(&["new", "gitdep", "--sdk", &sdk], root.path(), REPLAY_TIMEOUT);
    let krate = root.join("gitdep");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("read Cargo.toml");
    assert!(
        manifest.contains(&format!("wasmtap-sdk = {{ git = \"file://{}\", rev = ", repo.display())),
        "{manifest}"
    );
    let mut metadata = user.command("cargo", &["metadata", "--format-version", "1"], &krate);
    let json = run_ok(&mut metadata, BUILD_TIMEOUT);
    let json: serde_json::Value = serde_json::from_str(&json).expect("cargo metadata's JSON");
    let packages = json["packages"].as_array().expect("packages");
    let sdk = packages.iter().find(|p| p["name"] == "wasmtap-sdk").expect("the SDK resolved");
    let sdk_dir = Path::new(sdk["manifest_path"].as_str().expect("a manifest path"))
        .parent()
        .expect("a folder");
    assert!(
        sdk_dir.join("wit/analyzer.wit").is_file(),
        "the SDK checked out from git has no wit/ at {}",
        sdk_dir.display()
    );
    assert!(
        packages.iter().any(|p| p["name"] == "wasmtap-record"),
        "wasmtap-record did not resolve"
    );
}
