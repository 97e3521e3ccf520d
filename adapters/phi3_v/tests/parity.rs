//! HF parity on the project's copy of the Phi-3-V reference fixture (`tests/fixtures/phi3-v`,
//! made from the hub's remote code on a tiny model: 2-layer Phi-3 with su RoPE, 2-layer CLIP,
//! one 700x500 image in 2x2 crops = 757 image tokens).

use lmms_core::backend::DeviceSpec;
use lmms_core::runtime::DynFamily;
use lmms_phi3_v::Phi3VFamily;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/phi3-v")
}

#[test]
fn logits_and_loss_match_the_remote_code() {
    let report = Phi3VFamily.parity(&fixture(), DeviceSpec::Cpu).unwrap();
    for c in &report.checks {
        println!(
            "{}: max abs {:.3e}, max rel {:.3e} (tolerance {:.0e})",
            c.name, c.max_abs_err, c.max_rel_err, c.tolerance
        );
    }
    assert!(report.checks.iter().any(|c| c.name == "logits"));
    assert!(report.checks.iter().any(|c| c.name == "loss"));
    for c in &report.checks {
        assert!(c.passed(), "{} off by {:e}", c.name, c.max_rel_err);
    }
}
