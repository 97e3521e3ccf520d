//! Links the built-in adapter crates into the binary. Each registers its families itself with
//! `inventory`; naming a crate here only makes sure the linker keeps it.

use lmms_internlm_xcomposer2 as _;
use lmms_internlm2 as _;
use lmms_llava as _;
use lmms_mllama as _;
use lmms_phi3_v as _;
use lmms_qwen_vl as _;
use lmms_qwen2_vl as _;

/// The packages above: their families are "built-in" in `lmms plugins list`; any other linked
/// crate is a static plugin.
pub const CRATES: &[&str] = &[
    "lmms-internlm-xcomposer2",
    "lmms-internlm2",
    "lmms-llava",
    "lmms-mllama",
    "lmms-phi3-v",
    "lmms-qwen-vl",
    "lmms-qwen2-vl",
];
